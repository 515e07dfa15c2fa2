"""Data: class-disjoint splits of labelled images, from the embedded set or a benchmark on disk.

`build_splits(cfg.data)` is the entry point: a loader (the one ``data.name`` names in
`gapan.config.DATASETS`) reads the data set's seen and unseen classes, then the common steps run
here once: the last seen classes are held out as validation, ``data.max_classes`` slices every
split, unreadable images fail or are skipped, and the training split is checked against the
batch sampler's needs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image

from gapan.config import DATASETS, DataConfig
from gapan.data.benchmarks import Source
from gapan.data.families import validation_cut
from gapan.data.imageset import (
    BadImageError,
    DataError,
    ImageSet,
    Splits,
    make_imageset,
    read_image,
)
from gapan.files import cache_root, write_atomic

__all__ = [
    "BadImageError",
    "DataError",
    "ImageSet",
    "Splits",
    "Source",
    "build_splits",
    "check_image",
    "find_bad_images",
    "load_wesnoth",
    "make_imageset",
    "read_image",
    "select_classes",
]


def load_wesnoth(cfg: DataConfig) -> Source:
    """The embedded Wesnoth set, in the class split ``data.split_seed`` draws.

    The default needs no setup: an empty ``data.root`` means the prepared cache, built on first
    use.
    """
    # Imported here: the package imports this one (families, Source) as it loads.
    from gapan.data import wesnoth

    return wesnoth.load(Path(cfg.root) if cfg.root else wesnoth.prepare(), cfg.split_seed)


def build_splits(cfg: DataConfig) -> Splits:
    """Train, validation and test splits of the data set `cfg` names, checked and ready to sample.

    Validation classes are the last ``data.val_fraction`` of the seen classes, cut at a family
    boundary where the data set knows its families (no family spans training and validation).
    Labels are 0..C-1 within each split; the test query set and gallery (In-Shop) share labels.

    Raises:
        ConfigError: ``data.name`` is not a data set of `gapan.config.DATASETS`.
        DataError: when the data set is missing or malformed, a split is too small for the
            settings, or (with ``data.bad_images=fail``) an image cannot be read, as
            `BadImageError`. The message names the file or setting to change.
    """
    load = DATASETS.get(cfg.name)
    if cfg.split_seed and cfg.name != "wesnoth":
        raise DataError(
            f"data.split_seed={cfg.split_seed}: {cfg.name} keeps its standard class split; only "
            "the embedded set (data.name=wesnoth) draws other splits. Leave data.split_seed at 0."
        )
    source = load(cfg)
    train_names, val_names, test_names = _class_names(source, cfg)
    train = select_classes(source.seen, train_names)
    val = select_classes(source.seen, val_names)
    test = select_classes(source.unseen, test_names)
    gallery = select_classes(source.gallery, test_names) if source.gallery is not None else None
    if not source.verified:
        train, val, test, gallery = _without_bad_images(cfg, train, val, test, gallery)
    _check_training_split(train, cfg)
    _warn_unscored_classes(cfg.name, {"val": val, "test": test}, gallery)
    return Splits(
        name=cfg.name,
        train=train,
        val=val,
        test=test,
        test_gallery=gallery,
        recall_ks=source.recall_ks,
    )


def _class_names(source: Source, cfg: DataConfig) -> tuple[list[str], list[str], list[str]]:
    """The names of the training, validation and test classes, each sliced to
    ``data.max_classes``: validation is the last ``data.val_fraction`` of the seen classes, cut
    at a family boundary."""
    seen = list(source.seen.class_names)
    num_val = _validation_class_count(cfg.val_fraction, len(seen))
    if num_val >= len(seen):
        raise DataError(
            f"data.val_fraction={cfg.val_fraction} holds out all {len(seen)} seen classes of "
            f"{cfg.name}; lower data.val_fraction."
        )
    cut = validation_cut(seen, source.families or {}, num_val)
    limit = cfg.max_classes or None
    train_names = seen[:cut][:limit]
    val_names = seen[cut:][:limit]
    test_names = list(source.unseen.class_names)[:limit]
    if 0 < len(val_names) < 2:
        raise DataError(
            f"the validation split of {cfg.name} would hold {len(val_names)} class; retrieval "
            "needs at least 2. Raise data.val_fraction (or data.max_classes), or use a data set "
            "with more classes."
        )
    return train_names, val_names, test_names


def _without_bad_images(
    cfg: DataConfig, train: ImageSet, val: ImageSet, test: ImageSet, gallery: ImageSet | None
) -> tuple[ImageSet, ImageSet, ImageSet, ImageSet | None]:
    """The splits without their unreadable images (or `BadImageError`, as
    ``data.bad_images`` says); a class left with no image leaves the validation split, and the
    test split too when it has no gallery."""
    parts = [train, val, test] + ([gallery] if gallery is not None else [])
    bad = find_bad_images([path for part in parts for path in part.paths])
    if not bad:
        return train, val, test, gallery
    _report_bad_images(bad, cfg)
    train, val, test = (_without(part, bad) for part in (train, val, test))
    gallery = _without(gallery, bad) if gallery is not None else None
    val = _drop_empty_classes(val)
    if gallery is None:
        test = _drop_empty_classes(test)
    return train, val, test, gallery


def _validation_class_count(fraction: float, num_seen: int) -> int:
    if fraction <= 0:
        return 0
    # Rounding first keeps 0.1 * 30 (3.0000000000000004) from becoming 4.
    return math.ceil(round(fraction * num_seen, 9))


def select_classes(images: ImageSet, names: Sequence[str]) -> ImageSet:
    """The images of the classes `names`, relabelled 0..len(names)-1 in that order."""
    position = {name: index for index, name in enumerate(names)}
    old_names = images.class_names
    keep, labels = [], []
    for index, label in enumerate(images.labels.tolist()):
        name = old_names[label]
        if name in position:
            keep.append(index)
            labels.append(position[name])
    return ImageSet(
        paths=tuple(images.paths[index] for index in keep),
        labels=torch.tensor(labels, dtype=torch.long),
        class_names=tuple(names),
        transform=images.transform,
    )


def _without(images: ImageSet, bad: dict[Path, str]) -> ImageSet:
    return images.subset([index for index, path in enumerate(images.paths) if path not in bad])


def _drop_empty_classes(images: ImageSet) -> ImageSet:
    present = set(images.labels.tolist())
    return select_classes(
        images, [name for label, name in enumerate(images.class_names) if label in present]
    )


def _check_training_split(train: ImageSet, cfg: DataConfig) -> None:
    counts = Counter(train.labels.tolist())
    small = [
        (name, counts.get(label, 0))
        for label, name in enumerate(train.class_names)
        if counts.get(label, 0) < cfg.samples_per_class
    ]
    if small:
        listed = ", ".join(f"{name} ({count})" for name, count in small[:10])
        more = f" and {len(small) - 10} more" if len(small) > 10 else ""
        raise DataError(
            f"{len(small)} training classes of {cfg.name} have fewer than data.samples_per_class="
            f"{cfg.samples_per_class} images: {listed}{more}. Lower data.samples_per_class, or add "
            "images to these classes (or remove them from the data set)."
        )
    if train.num_classes < cfg.classes_per_batch:
        raise DataError(
            f"the training split of {cfg.name} has {train.num_classes} classes, fewer than "
            f"data.classes_per_batch={cfg.classes_per_batch}. Lower data.classes_per_batch to at "
            f"most {train.num_classes}, or use more classes (data.max_classes, data.val_fraction)."
        )


def _warn_unscored_classes(
    name: str, evaluated: dict[str, ImageSet], gallery: ImageSet | None
) -> None:
    """Warn once about evaluation classes that Recall@K, MAP@R and R-Precision cannot score.

    A query whose class has no other item to retrieve (one image, in leave-one-out retrieval;
    no gallery image, with a gallery) is left out of those metrics by gapan.metrics, so such a
    class silently does not count. NMI still clusters it.
    """
    problems = []
    for split, images in evaluated.items():
        counts = Counter(images.labels.tolist())
        if split == "test" and gallery is not None:
            in_gallery = Counter(gallery.labels.tolist())
            lonely = [images.class_names[label] for label in counts if not in_gallery[label]]
            why = "no gallery image"
        else:
            lonely = [images.class_names[label] for label, count in counts.items() if count == 1]
            why = "a single image"
        if lonely:
            listed = ", ".join(sorted(lonely)[:10]) + (
                f" and {len(lonely) - 10} more" if len(lonely) > 10 else ""
            )
            classes = "class" if len(lonely) == 1 else "classes"
            problems.append(f"{len(lonely)} {split} {classes} with {why} ({listed})")
    if problems:
        warnings.warn(
            f"{name}: {'; '.join(problems)}. Their images have no other image of their class to "
            "retrieve, so Recall@K, MAP@R and R-Precision leave them out (NMI keeps them). Add "
            "images to these classes or remove them to have every class count.",
            stacklevel=3,
        )


def _report_bad_images(bad: dict[Path, str], cfg: DataConfig) -> None:
    listed = "\n".join(f"  {path}: {reason}" for path, reason in list(bad.items())[:10])
    more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
    if cfg.bad_images == "fail":
        raise BadImageError(
            f"{len(bad)} unreadable image files in {cfg.name}:\n{listed}{more}\n"
            "Fix or delete them, or set data.bad_images=skip to leave them out."
        )
    warnings.warn(
        f"leaving out {len(bad)} unreadable image files of {cfg.name} "
        f"(data.bad_images=skip):\n{listed}{more}",
        stacklevel=4,  # the caller of build_splits
    )


# ----------------------------------------------------------------------------- the bad-image scan


def check_image(path: Path) -> str | None:
    """Why an image file cannot be used (missing, empty, corrupt, truncated); None if it looks fine.

    A cheap check: PIL verifies the file's structure (PNG checksums included) without decoding
    the pixels; a JPEG must end with its end-of-image marker.
    """
    try:
        size = path.stat().st_size
    except OSError:
        return "missing"
    if size == 0:
        return "empty file"
    try:
        with Image.open(path) as image:
            image_format = image.format
            image.verify()
    except Exception as error:  # PIL raises many types for a broken file
        return f"not a readable image ({type(error).__name__}: {error})"
    if image_format == "JPEG":
        with path.open("rb") as file:
            file.seek(max(0, size - 1024))
            # Some encoders pad after the marker, so look at the tail, not the last two bytes.
            if b"\xff\xd9" not in file.read():
                return "truncated JPEG (no end-of-image marker)"
    return None


def find_bad_images(paths: Sequence[Path]) -> dict[Path, str]:
    """The unusable files among `paths`, each with the reason (see `check_image`).

    Results are remembered per file (by size and modification time) in a JSON file under
    `gapan.files.cache_root()`, so building the same data set again checks only new or changed
    files.
    """
    if not paths:
        return {}
    paths = [Path(path) for path in paths]
    stats: dict[Path, tuple[int, int] | None] = {}
    for path in paths:
        try:
            stat = path.stat()
            stats[path] = (stat.st_size, stat.st_mtime_ns)
        except OSError:
            stats[path] = None
    common = Path(os.path.commonpath([str(path) for path in paths]))
    record_file = (
        cache_root()
        / "image-checks"
        / f"{hashlib.sha1(str(common).encode()).hexdigest()[:16]}.json"
    )
    record = _read_record(record_file)
    unknown = [
        path
        for path in paths
        if stats[path] is not None and record.get(str(path), [None, None])[:2] != list(stats[path])
    ]
    if unknown:
        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 4)) as pool:
            for path, reason in zip(unknown, pool.map(check_image, unknown), strict=True):
                record[str(path)] = [*stats[path], reason]
        _write_record(record_file, record)
    bad = {}
    for path in paths:
        reason = "missing" if stats[path] is None else record[str(path)][2]
        if reason is not None:
            bad[path] = reason
    return bad


def _read_record(path: Path) -> dict[str, list]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_record(path: Path, record: dict[str, list]) -> None:
    # The record only saves time: a read-only or full disk must not stop training.
    try:
        write_atomic(path, json.dumps(record))  # parallel trials never read half a file
    except OSError:
        pass
