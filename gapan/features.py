"""Frozen-backbone outputs, computed once per image set, backbone and image size.

With a frozen backbone every epoch of every trial would push the same images through the same
network; `cached_features` does it once and keeps the result as safetensors under
``$GAPAN_CACHE/features/`` (default ``~/.cache/gapan/features/``). Trials that start together share
one build: a file lock serialises the builders and the file appears by atomic rename, so a reader
never sees it half-written. Each entry records a checksum of its tensors, verified when a process
first reads it: an entry damaged on disk, or one without a checksum, is rebuilt with a warning
that names it.

Partial fine-tuning freezes only the lower stages: `cached_stage_outputs` keeps their feature
maps, of several augmented views of every training image, so that trials train the upper stages
without running the lower ones again. Before building them it estimates their size on disk
and in memory, and refuses (`check_cache_room`) where either would not fit.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import re
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import safetensors
import torch
from filelock import FileLock
from torch.utils.data import DataLoader

from gapan.config import ConfigError
from gapan.data.imageset import ImageSet
from gapan.files import cache_root
from gapan.weights import ChecksumError, load_safetensors_checked, save_safetensors_atomic

if TYPE_CHECKING:  # imported where a backbone runs: timm and torchvision take seconds to import
    from gapan.backbone import Backbone

_log = logging.getLogger(__name__)

# Part of every cache key: change it when `eval_transform` changes.
TRANSFORM_VERSION = "shorter-side-resize-center-crop-v1"
# Part of every key of augmented views: change it when `train_transform` changes.
AUGMENTATION_VERSION = "random-resized-crop-flip-v1"
AUGMENTATION_SEED = 7_919  # view v is drawn from seed AUGMENTATION_SEED + v


def extract_features(
    backbone: Backbone,
    images: ImageSet,
    image_size: int,
    batch_size: int,
    device: torch.device | str,
    num_workers: int = 0,
) -> torch.Tensor:
    """Backbone features of every image, in order.

    Returns:
        float32 tensor (N, backbone.num_features) on the CPU.
    """
    from gapan.data.transforms import eval_transform

    transform = eval_transform(image_size)
    return run_network(backbone, images, transform, batch_size, device, num_workers)


def run_network(
    network: torch.nn.Module,
    images: ImageSet,
    transform: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    device: torch.device | str,
    num_workers: int = 0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """`network`'s output for every image after `transform`, in order, as `dtype` on the CPU
    (bfloat16 where float16 is asked for and an output exceeds its range).

    The network runs in eval mode with channels-last memory (faster for convolutions on CPUs
    and GPUs alike), in bfloat16 autocast on CUDA and in float32 elsewhere.
    """
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    loader = DataLoader(
        images.with_transform(transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=on_cuda,
    )
    was_training = network.training
    network.eval().to(device, memory_format=torch.channels_last)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else contextlib.nullcontext()
    chunks = []
    with torch.inference_mode(), autocast:
        for batch, _ in loader:
            batch = batch.to(device, non_blocking=True, memory_format=torch.channels_last)
            output = network(batch).float()
            if dtype == torch.float16 and not torch.isfinite(output.half()).all():
                dtype = torch.bfloat16  # float32's range, for outputs beyond float16's
                chunks = [chunk.to(dtype) for chunk in chunks]
            chunks.append(output.to(dtype).cpu().contiguous())
    network.train(was_training)
    if not chunks:
        return torch.empty(0, getattr(network, "num_features", 0), dtype=dtype)
    return torch.cat(chunks)


def augmented_views(
    network: torch.nn.Module,
    images: ImageSet,
    image_size: int,
    views: int,
    batch_size: int,
    device: torch.device | str,
    dtype: torch.dtype = torch.float16,
) -> torch.Tensor:
    """`network`'s output for `views` augmented views of every image: (N, views, ...).

    Each view is a random resized crop and flip (`train_transform`), drawn from a generator
    seeded by the view's number, so the same images give the same views on every machine.
    """
    from gapan.data.transforms import train_transform

    if views < 1:
        raise ValueError(f"views={views}: at least one view is needed")
    # Each view is copied into its place as it comes: a list of views stacked at the end would
    # hold every view twice at once.
    stacked = None
    for view in range(views):
        # The transforms draw from torch's global generator; decoding in this process (no
        # workers) in a fixed order makes the draws a function of the seed alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(AUGMENTATION_SEED + view)
            transform = train_transform(image_size)
            maps = run_network(network, images, transform, batch_size, device, 0, dtype)
        if stacked is None:
            stacked = torch.empty((len(maps), views, *maps.shape[1:]), dtype=maps.dtype)
        elif maps.dtype != stacked.dtype:  # float16 asked, but this view exceeded its range
            stacked = stacked.to(maps.dtype)
        stacked[:, view] = maps
        dtype = stacked.dtype  # the next views are computed straight into the type chosen
    return stacked


def cached_features(
    backbone: Backbone,
    sets: Mapping[str, ImageSet],
    image_size: int,
    batch_size: int,
    device: torch.device | str,
    cache_dir: str | Path | None = None,
    num_workers: int = 0,
) -> dict[str, torch.Tensor]:
    """Features of each set, from the disk cache, computing those missing.

    A cache entry is keyed by the set's `fingerprint`, `backbone.identity`, the image size and
    the transform version. Building one logs a line; a hit is silent.

    Args:
        backbone: The frozen backbone.
        sets: Image sets by name (``train``, ``val``, ...).
        image_size: Side of the square input in pixels.
        batch_size: Images per forward pass.
        device: Where the backbone runs.
        cache_dir: The cache folder; ``$GAPAN_CACHE/features`` when omitted.
        num_workers: DataLoader worker processes for decoding.

    Returns:
        float32 tensors (N, num_features) on the CPU, by set name.
    """

    def build(images: ImageSet) -> torch.Tensor:
        return extract_features(backbone, images, image_size, batch_size, device, num_workers)

    return {
        name: _cached(_folder(cache_dir), backbone.identity, name, images, image_size, build)
        for name, images in sets.items()
    }


def cached_stage_outputs(
    frozen: torch.nn.Module,
    identity: str,
    train: ImageSet,
    evaluated: Mapping[str, ImageSet],
    image_size: int,
    views: int,
    batch_size: int,
    device: torch.device | str,
    cache_dir: str | Path | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The frozen part of a backbone's output (feature maps, float16), from the disk cache.

    Args:
        frozen: The frozen lower part of a backbone (`gapan.backbone.split_backbone`).
        identity: What makes `frozen` what it is (backbone, weights, cut): a cache key.
        train: Images seen in `views` augmented views each (`augmented_views`).
        evaluated: Image sets by name, seen once each as `eval_transform` makes them.

    Returns:
        The training maps (N, views, C, H, W) and each evaluated set's maps (N, C, H, W).
    """
    from gapan.data.transforms import eval_transform

    folder = _folder(cache_dir)

    def augmented(images: ImageSet) -> torch.Tensor:
        return augmented_views(frozen, images, image_size, views, batch_size, device)

    def plain(images: ImageSet) -> torch.Tensor:
        transform = eval_transform(image_size)
        return run_network(frozen, images, transform, batch_size, device, 0, torch.float16)

    views_variant = f"{AUGMENTATION_VERSION}-{views}views"
    plain_variant = f"{TRANSFORM_VERSION}-maps"
    entries = [
        (train, views, views_variant),
        *((images, 1, plain_variant) for images in evaluated.values()),
    ]
    _check_stage_cache_room(folder, frozen, identity, image_size, entries)
    train_maps = _cached(folder, identity, "train", train, image_size, augmented, views_variant)
    maps = {
        name: _cached(folder, identity, name, images, image_size, plain, plain_variant)
        for name, images in evaluated.items()
    }
    return train_maps, maps


def _check_stage_cache_room(
    folder: Path,
    frozen: torch.nn.Module,
    identity: str,
    image_size: int,
    entries: list[tuple[ImageSet, int, str]],
) -> None:
    """Refuse (`check_cache_room`) to build the entries not cached yet if they cannot fit.

    Args:
        entries: (images, copies of each, variant) of every set `cached_stage_outputs` returns.
    """
    missing = [
        (len(images), copies)
        for images, copies, variant in entries
        if not (folder / _entry_name(identity, images, image_size, variant)).exists()
    ]
    if not missing:
        return
    image_bytes = stage_output_bytes(frozen, image_size)
    returned = sum(len(images) * copies for images, copies, _ in entries)
    # At its peak a build holds everything `cached_stage_outputs` returns, plus two more copies
    # of one view of the set being built: its batches and their concatenation (`run_network`).
    largest_view = max(count for count, _ in missing)
    check_cache_room(
        folder,
        disk_need=sum(count * copies for count, copies in missing) * image_bytes,
        memory_need=(returned + 2 * largest_view) * image_bytes,
    )


def stage_output_bytes(frozen: torch.nn.Module, image_size: int) -> int:
    """Bytes of one image's cached output of `frozen` (float16 maps), from one probe image."""
    was_training = frozen.training
    device = next(frozen.parameters(), torch.empty(0)).device
    with torch.inference_mode():
        maps = frozen.eval()(torch.zeros(1, 3, image_size, image_size, device=device))
    frozen.train(was_training)
    return maps[0].numel() * 2


def check_cache_room(folder: Path, disk_need: int, memory_need: int = 0) -> None:
    """Refuse to build a cache that would not fit on its disk or in memory, saying how large it
    would be. Memory is checked where the system reports it (`available_memory`).

    Raises:
        ConfigError: `disk_need` bytes are more than the disk of `folder` has free, or
            `memory_need` bytes more than the memory available.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    available = available_memory()
    shortages = []
    if disk_need > free:
        shortages.append(
            f"about {_size(disk_need)} in {folder}, and its disk has {_size(free)} free"
        )
    if available is not None and memory_need > available:
        shortages.append(
            f"about {_size(memory_need)} of memory while it is built, and {_size(available)} "
            "is available"
        )
    if not shortages:
        return
    remedies = (
        "lower data.cached_views or data.image_size, or train more stages (model.trainable_blocks)"
    )
    if disk_need > free:
        remedies += "; or free some disk space, or put the cache on a larger disk (GAPAN_CACHE)"
    raise ConfigError(
        "the cache of the frozen stages' outputs (model.backbone_mode=partial) needs "
        f"{'; and '.join(shortages)}. To make it fit, {remedies}."
    )


def available_memory() -> int | None:
    """Bytes of memory the system can give a new allocation without swapping (Linux's
    MemAvailable); None where the system does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the kernel counts in kibibytes
    except (OSError, ValueError):
        pass
    return None


def _size(count: int) -> str:
    """Bytes for people: ``1.2 GB``, or ``35 MB`` below a gigabyte."""
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.2g} MB"


def _cached(
    folder: Path,
    identity: str,
    name: str,
    images: ImageSet,
    image_size: int,
    build: Callable[[ImageSet], torch.Tensor],
    variant: str = TRANSFORM_VERSION,
) -> torch.Tensor:
    """One cache entry, read, or built once under a lock that concurrent trials share."""
    path = folder / _entry_name(identity, images, image_size, variant)
    cached = _read_entry(path, len(images))
    if cached is None:
        with FileLock(f"{path}.lock"):
            # Another process may have built it while this one waited for the lock.
            cached = _read_entry(path, len(images))
            if cached is None:
                cached = _build_entry(path, name, identity, images, image_size, variant, build)
    return cached


def read_cached_features(
    backbone_identity: str,
    sets: Mapping[str, ImageSet],
    image_size: int,
    cache_dir: str | Path | None = None,
) -> dict[str, torch.Tensor] | None:
    """What `cached_features` returns when every set is cached, without the backbone; else None.

    `backbone_identity` is the `Backbone.identity` the entries were built with.
    """
    folder = _folder(cache_dir)
    features = {}
    for name, images in sets.items():
        path = folder / _entry_name(backbone_identity, images, image_size)
        cached = _read_entry(path, len(images))
        if cached is None:
            return None
        features[name] = cached
    return features


def _folder(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else cache_root() / "features"


def _entry_name(
    backbone_identity: str, images: ImageSet, image_size: int, variant: str = TRANSFORM_VERSION
) -> str:
    key = f"{backbone_identity}|{images.fingerprint}|{image_size}|{variant}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    backbone_name = backbone_identity.partition("@")[0]
    readable = re.sub(r"[^\w.-]", "_", backbone_name)
    return f"{readable}-{image_size}px-{images.fingerprint}-{digest}.safetensors"


def _read_entry(path: Path, count: int) -> torch.Tensor | None:
    """The cached features, or None when absent or unusable (then they are rebuilt)."""
    if not path.exists():
        return None
    try:
        stat = path.stat()
        features = _load_entry(str(path), stat.st_mtime_ns, stat.st_size)
    except ChecksumError as error:
        _log.warning("rebuilding feature cache %s: %s", path, error)
        return None
    except (safetensors.SafetensorError, OSError, KeyError) as error:
        _log.warning("rebuilding unreadable feature cache %s: %s", path, error)
        return None
    if features.shape[0] != count:
        _log.warning(
            "rebuilding feature cache %s: %d rows for %d images", path, len(features), count
        )
        return None
    return features


@functools.lru_cache(maxsize=8)  # the sets of one data set, as features and as stage outputs
def _load_entry(path: str, mtime_ns: int, size: int) -> torch.Tensor:
    """Read and verify a cache entry once per process: a Tune worker reused for many trials
    loads its features once, not once per trial. The file's time and size are in the key, so a
    rebuilt entry is read again. Callers share the tensor and never modify it."""
    return load_safetensors_checked(Path(path))["features"]


def _build_entry(
    path: Path,
    name: str,
    identity: str,
    images: ImageSet,
    image_size: int,
    variant: str,
    build: Callable[[ImageSet], torch.Tensor],
) -> torch.Tensor:
    # Minutes on a CPU, once per data set, backbone and image size: say what is happening.
    print(
        f"Caching {identity} outputs of the {name} images ({len(images)} at {image_size} px, "
        f"{variant}), once",
        flush=True,
    )
    start = time.perf_counter()
    features = build(images)
    seconds = time.perf_counter() - start
    metadata = {
        "backbone": identity,
        "fingerprint": images.fingerprint,
        "image_size": str(image_size),
        "transform": variant,
    }
    save_safetensors_atomic({"features": features}, path, metadata)
    _log.info(
        "built %s entry: %s from %d images at %d px in %.1f s (%.0f img/s) -> %s",
        name,
        tuple(features.shape),
        len(features),
        image_size,
        seconds,
        len(features) / max(seconds, 1e-9),
        path,
    )
    return features
