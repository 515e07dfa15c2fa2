"""What the benches share: device timing, a synthetic JPEG data set, and the table + JSON output.

Every bench prints its figures as a table for people and as one JSON line (starting with
``{"bench": ...}``) for tools; ``--json-out FILE`` appends that line to a file as well.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gapan import results
from gapan.files import atomic_path


def add_output_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json-out", type=Path, help="also append the result's JSON line to this file"
    )


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def bench_parser(module: str, description: str | None) -> argparse.ArgumentParser:
    """A bench's argument parser, with the flags every device bench has: --device, --json-out."""
    parser = argparse.ArgumentParser(
        prog=f"python -m bench.{module}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--device", default=default_device(), help="cuda or cpu (default: cuda if there is one)"
    )
    add_output_argument(parser)
    return parser


def add_data_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "gapan-bench-jpeg",
        help="where the synthetic JPEG files go, kept for the next run (default: %(default)s)",
    )


def fill_device_defaults(
    args: argparse.Namespace, **defaults: tuple[Any, Any]
) -> argparse.Namespace:
    """Set each option left unset (None) to its default for the device: (on CUDA, on the CPU)."""
    on_cuda = torch.device(args.device).type == "cuda"
    for name, (cuda_value, cpu_value) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, cuda_value if on_cuda else cpu_value)
    return args


def environment(device: torch.device | str) -> dict[str, Any]:
    """What the figures were measured on: a study's environment record, and what timings need."""
    device = torch.device(device)
    info: dict[str, Any] = {
        **results.environment(str(device)),
        "torch_threads": torch.get_num_threads(),
        # Other work on the machine skews CPU figures; this says how busy it was.
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        total = torch.cuda.get_device_properties(device).total_memory
        info["gpu_memory_gib"] = round(total / 2**30, 1)
    return info


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_device(device: torch.device, work: Callable[[], Any]) -> tuple[float, float]:
    """Seconds the device spends on `work`, and seconds the host spends issuing it.

    Queued work is finished first. The device time ends when the device has finished `work`; the
    host time ends when `work` returns, so it is the cost of launching the work plus any wait for
    the device inside it (a host-device sync). Host time well below device time means the host runs
    ahead (device-bound); equal times mean the device waits for the host.
    """
    synchronize(device)
    if device.type != "cuda":
        started = time.perf_counter()
        work()
        seconds = time.perf_counter() - started
        return seconds, seconds
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    started = time.perf_counter()
    work()
    host = time.perf_counter() - started
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000, host


def print_table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """A plain text table of `columns` (missing values shown as -)."""

    def shown(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
        return str(value)

    cells = [[shown(row.get(column)) for column in columns] for row in rows]
    widths = [
        max([len(column), *(len(line[i]) for line in cells)]) for i, column in enumerate(columns)
    ]
    print(f"\n{title}")
    print("  ".join(column.rjust(width) for column, width in zip(columns, widths, strict=True)))
    for line in cells:
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))
    sys.stdout.flush()


def emit(result: dict[str, Any], json_out: Path | None) -> None:
    """Print the result as one JSON line, and append it to `json_out` when given."""
    line = json.dumps(result, default=_plain)
    print(line, flush=True)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        with json_out.open("a", encoding="utf-8") as file:
            file.write(line + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def relative_command(words: Sequence[str]) -> str:
    """A command as a record keeps it: this Python as ``python`` and paths inside the
    repository relative to it, so the record reads the same wherever it was made."""
    root = Path(__file__).resolve().parents[1]

    def word(text: str) -> str:
        if text == sys.executable:
            return "python"
        path = Path(text)
        if path.is_absolute() and path.resolve().is_relative_to(root):
            return path.resolve().relative_to(root).as_posix()
        return text

    return shlex.join(word(text) for text in words)


def rounded(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


# ------------------------------------------------------------------------ synthetic image files


def write_image_folder(
    root: Path,
    train_classes: int,
    train_images: int,
    test_classes: int,
    test_images: int,
    width: int = 500,
    height: int = 375,
    processes: int | None = None,
) -> Path:
    """A `folder` data set of synthetic JPEG photos (CUB's typical 500 x 375) and its split file.

    The images are smooth colour fields with shapes and fine grain, so they compress and decode
    about like photos (tens of KB each), not like flat colour or pure noise. Files that already
    exist are kept, so a second call is free.

    Args:
        root: Where ``<class>/<image>.jpg`` and ``split.json`` go.
        train_classes, train_images: Seen classes and images per seen class.
        test_classes, test_images: Unseen classes and images per unseen class.
        processes: Encoder processes (default: all CPUs).

    Returns:
        The split file, for ``data.split_file``.
    """
    train = [f"seen_{index:04d}" for index in range(train_classes)]
    test = [f"unseen_{index:04d}" for index in range(test_classes)]
    jobs = [
        (root / name / f"{index:05d}.jpg", seed, width, height)
        for names, count in ((train, train_images), (test, test_images))
        for name in names
        for index in range(count)
        for seed in [zlib.crc32(f"{name}/{index}".encode())]
    ]
    for name in train + test:
        (root / name).mkdir(parents=True, exist_ok=True)
    missing = [job for job in jobs if not job[0].exists()]
    if missing:
        workers = processes or os.cpu_count() or 1
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_write_jpeg, missing, chunksize=max(1, len(missing) // (4 * workers))))
    split_file = root / "split.json"
    split_file.write_text(json.dumps({"train": train, "test": test}))
    return split_file


def _write_jpeg(job: tuple[Path, int, int, int]) -> None:
    from PIL import Image, ImageDraw

    path, seed, width, height = job
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.BILINEAR)
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x, y, radius = rng.integers(0, width), rng.integers(0, height), rng.integers(10, 100)
        colour = tuple(int(value) for value in rng.integers(0, 256, 3))
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)
    grain = rng.integers(-6, 7, (height, width, 1), dtype=np.int16)
    pixels = (np.asarray(image, dtype=np.int16) + grain).clip(0, 255).astype(np.uint8)
    with atomic_path(path) as partial:  # a killed run never leaves half a file under the name
        Image.fromarray(pixels).save(partial, "JPEG", quality=90)
