"""One driver per study folder: a lock that the running driver holds, and who it is.

Two drivers in one folder would split its Optuna grid between them and overwrite each other's
tables, so a second one is refused before it writes anything. The lock is the operating
system's (`filelock`, an advisory lock on ``driver.lock``): a driver that is killed loses it
with its process, so a stale lock never blocks a resume. ``driver.json`` beside it says which
process holds the study, for the refusal and for a report asked for while the study runs.

Only the standard library and `filelock` are imported here: the reports ask the same question.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

LOCK_FILE = "driver.lock"
DRIVER_FILE = "driver.json"


class StudyLocked(RuntimeError):
    """The study folder cannot be held: another driver holds it (the message names it), or the
    lock cannot be made there."""


# A report that looks whether a study runs holds its lock for an instant: a driver that starts
# at that moment waits this long before it takes the folder for held.
WAIT_S = 2.0


@contextmanager
def study_lock(study_dir: Path) -> Iterator[None]:
    """Hold `study_dir` for this driver while the block runs.

    The folder (and its parents) are made if needed; if the block leaves nothing in a folder
    it made, they go again, so a study refused at its first check leaves no trace.

    Raises:
        StudyLocked: Another process holds the folder, or its lock cannot be made.
    """
    made = [folder for folder in [study_dir, *study_dir.parents] if not folder.exists()]
    lock = _acquire(study_dir)
    holder = study_dir / DRIVER_FILE
    try:
        try:
            holder.write_text(json.dumps(_this_driver()) + "\n", encoding="utf-8")
        except OSError as error:
            raise StudyLocked(f"cannot write {holder} ({error}); free some space") from None
        yield
    finally:
        holder.unlink(missing_ok=True)
        # Still held: no other driver can take the lock file while it goes.
        if made and [path.name for path in study_dir.iterdir()] == [LOCK_FILE]:
            with suppress(OSError):
                (study_dir / LOCK_FILE).unlink()
                for folder in made:  # the study's folder, then the parents made for it
                    folder.rmdir()
        lock.release()


def _acquire(study_dir: Path) -> FileLock:
    # A driver that took the lock just as its last holder removed the folder holds a lock on a
    # file no one else can find: it takes the lock again on the file in its place.
    for _ in range(3):
        try:
            study_dir.mkdir(parents=True, exist_ok=True)
            lock = FileLock(study_dir / LOCK_FILE, timeout=WAIT_S)
            lock.acquire()
        except Timeout:
            raise StudyLocked(
                f"{study_dir} is in use by another driver ({describe(read_driver(study_dir))})"
            ) from None
        except OSError as error:
            raise StudyLocked(f"cannot lock the study folder {study_dir} ({error})") from None
        if (study_dir / LOCK_FILE).exists():
            return lock
        lock.release()
    raise StudyLocked(f"cannot lock the study folder {study_dir}: its lock file keeps going")


def running_driver(study_dir: Path) -> dict[str, Any] | None:
    """The driver that holds `study_dir` now (what ``driver.json`` says of it, {} when it says
    nothing), or None when no driver holds it."""
    if not (study_dir / LOCK_FILE).is_file():
        return None
    lock = FileLock(study_dir / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return read_driver(study_dir)
    except OSError:
        return None  # a folder this user cannot write is no running study of theirs
    lock.release()
    return None


def read_driver(study_dir: Path) -> dict[str, Any]:
    try:
        record = json.loads((study_dir / DRIVER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def describe(driver: dict[str, Any]) -> str:
    """A driver in words: process, machine, start time and command, as far as they are known."""
    if not driver.get("pid"):
        return "a process that has not said who it is yet"
    words = f"process {driver['pid']} on {driver.get('host', 'an unknown machine')}"
    if driver.get("started"):
        words += f", started {driver['started']}"
    if driver.get("command"):
        words += f": {driver['command']}"
    return words


def _this_driver() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
