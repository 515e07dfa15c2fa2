"""Files that readers never see half-written, and the folder of rebuildable caches.

`write_atomic` and `atomic_path` write under a temporary name in the target's own folder, then
rename the result onto the target (`os.replace`, atomic within one file system). A reader (a
report, a resumed run, a trial starting in parallel) sees the old file or the new one, never a
part; a writer killed mid-way leaves the old file as it was and at most a hidden ``.*.tmp`` file.

Only the standard library is imported here: the report package (which runs without torch) uses
the same helper.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_root() -> Path:
    """``$GAPAN_CACHE`` if set, else ``~/.cache/gapan``: derived files that can be rebuilt.

    Converted weights (``weights/``), cached backbone features (``features/``) and the records
    of the bad-image scan (``image-checks/``) live here.
    """
    home = os.environ.get("GAPAN_CACHE")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "gapan"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file beside `path` to write to; it replaces `path` when the block succeeds.

    For writers that take a file name (``torch.save``, safetensors). If the block raises, the
    temporary file is removed and `path` is left as it was. The file is created with the
    permissions an ordinary ``open(path, "w")`` would give it (the umask applies).

    Example:
        >>> with atomic_path(folder / "checkpoint.pt") as temporary:  # doctest: +SKIP
        ...     torch.save(state, temporary)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _reserve(path)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: str | bytes, encoding: str = "utf-8") -> None:
    """Write `data` (text in `encoding`, or bytes) to `path` so no reader sees a part of it.

    The data reach the disk (fsync) before the rename: these are small files, such as a study's
    tables, whose loss would cost finished work.
    """
    content = data.encode(encoding) if isinstance(data, str) else bytes(data)
    with atomic_path(path) as temporary, temporary.open("wb") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())


def _reserve(path: Path) -> Path:
    """Create an empty, uniquely named hidden file beside `path` (writers never share one)."""
    while True:
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return candidate
