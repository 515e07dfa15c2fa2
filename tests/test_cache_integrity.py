"""Caches that cannot silently feed wrong numbers: checksums on every cache file, and the partial
stage cache sized for disk and memory before it is built."""

from __future__ import annotations

import logging
import os
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest
import safetensors
import safetensors.torch
import timm
import torch

from gapan import features
from gapan.backbone import Backbone, split_backbone
from gapan.config import ConfigError
from gapan.data.imageset import ImageSet
from gapan.data.transforms import train_transform
from gapan.features import (
    AUGMENTATION_SEED,
    augmented_views,
    cached_features,
    cached_stage_outputs,
    extract_features,
    read_cached_features,
    run_network,
)
from gapan.weights import CHECKSUM_KEY, WEIGHT_PACKAGES, load_pretrained
from tests.test_backbone import MOBILENET, converted_file, write_images

IMAGE_SIZE = 32


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Converted weights and cache entries go to this test's own folder; no entry read by an
    earlier test is remembered (each test starts as a new process would)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("GAPAN_CACHE", str(folder))
    features._load_entry.cache_clear()
    return folder


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return Backbone("mobilenetv2_100", "none").eval()


@pytest.fixture
def images(tmp_path) -> ImageSet:
    return write_images(tmp_path / "images", count=6)


def zero_the_middle(path: Path, length: int = 1024) -> None:
    """Overwrite `length` bytes in the middle of `path` with zeros, as a bad sector or a faulty
    copy would: the file keeps its size and modification time."""
    before = path.stat()
    data = bytearray(path.read_bytes())
    start = len(data) // 2 - length // 2
    assert any(data[start : start + length]), "the damage must change the file"
    data[start : start + length] = bytes(length)
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def stage_cache(backbone: Backbone, images: ImageSet, folder: Path, views: int = 2):
    """The partial-mode cache of `backbone`'s lower stages, for `images` as training and
    validation set."""
    frozen, _ = split_backbone(backbone, 2)
    return cached_stage_outputs(
        frozen, "mobilenet|cut", images, {"val": images}, IMAGE_SIZE, views, 8, "cpu", folder
    )


def test_a_damaged_feature_cache_entry_is_rebuilt_with_a_warning_naming_it(
    backbone, images, tmp_path, caplog
):
    folder = tmp_path / "features"
    sets = {"train": images}
    built = cached_features(backbone, sets, IMAGE_SIZE, 8, "cpu", cache_dir=folder)["train"]
    (entry,) = folder.glob("*.safetensors")
    zero_the_middle(entry)
    features._load_entry.cache_clear()  # a new process: nothing read yet

    caplog.set_level(logging.WARNING, logger="gapan.features")
    # A trial on cached features reads without a backbone: it must not take the damaged entry.
    assert read_cached_features(backbone.identity, sets, IMAGE_SIZE, cache_dir=folder) is None
    rebuilt = cached_features(backbone, sets, IMAGE_SIZE, 8, "cpu", cache_dir=folder)["train"]

    assert f"rebuilding feature cache {entry}" in caplog.text and "damaged" in caplog.text
    fresh = extract_features(backbone, images, IMAGE_SIZE, 8, "cpu")
    assert torch.equal(rebuilt, fresh) and torch.equal(rebuilt, built)
    features._load_entry.cache_clear()
    caplog.clear()
    read = read_cached_features(backbone.identity, sets, IMAGE_SIZE, cache_dir=folder)
    assert read is not None and torch.equal(read["train"], fresh) and not caplog.records


def test_a_damaged_stage_cache_entry_is_rebuilt_with_a_warning_naming_it(
    backbone, images, tmp_path, caplog
):
    folder = tmp_path / "stages"
    built_train, built_val = stage_cache(backbone, images, folder)
    # The training entry holds every view: the largest file.
    entry = max(folder.glob("*.safetensors"), key=lambda path: path.stat().st_size)
    zero_the_middle(entry)
    features._load_entry.cache_clear()

    caplog.set_level(logging.WARNING, logger="gapan.features")
    train, val = stage_cache(backbone, images, folder)

    assert f"rebuilding feature cache {entry}" in caplog.text and "damaged" in caplog.text
    assert torch.equal(train, built_train) and torch.equal(val["val"], built_val["val"])
    with safetensors.safe_open(entry, framework="pt") as rebuilt:
        assert torch.equal(rebuilt.get_tensor("features"), built_train)


def test_an_entry_without_a_checksum_is_rebuilt(backbone, images, tmp_path, caplog):
    folder = tmp_path / "features"
    sets = {"train": images}
    built = cached_features(backbone, sets, IMAGE_SIZE, 8, "cpu", cache_dir=folder)["train"]
    (entry,) = folder.glob("*.safetensors")
    # An entry as older code wrote it (no checksum), and wrong: only a rebuild corrects it.
    with safetensors.safe_open(entry, framework="pt") as old:
        metadata = {key: value for key, value in old.metadata().items() if key != CHECKSUM_KEY}
    safetensors.torch.save_file({"features": torch.zeros_like(built)}, entry, metadata)
    features._load_entry.cache_clear()

    caplog.set_level(logging.WARNING, logger="gapan.features")
    rebuilt = cached_features(backbone, sets, IMAGE_SIZE, 8, "cpu", cache_dir=folder)["train"]

    assert f"rebuilding feature cache {entry}" in caplog.text and "no checksum" in caplog.text
    assert torch.equal(rebuilt, built)
    with safetensors.safe_open(entry, framework="pt") as written:
        assert CHECKSUM_KEY in written.metadata()


def test_damaged_converted_weights_are_converted_again(caplog):
    backbone_name = WEIGHT_PACKAGES[MOBILENET].backbone
    first = timm.create_model(backbone_name)
    load_pretrained(MOBILENET, backbone_name, first)
    converted = converted_file(MOBILENET)
    zero_the_middle(converted)

    caplog.set_level(logging.WARNING, logger="gapan.weights")
    second = timm.create_model(backbone_name)
    load_pretrained(MOBILENET, backbone_name, second)

    assert f"rebuilding converted weights {converted}" in caplog.text
    assert "damaged" in caplog.text
    expected = first.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in second.state_dict().items())


def test_the_stage_cache_is_refused_before_building_when_memory_is_short(
    backbone, images, tmp_path, monkeypatch
):
    folder = tmp_path / "stages"
    monkeypatch.setattr(features, "available_memory", lambda: 1000)
    refusal = (
        r"needs about 0\.\d+ MB of memory while it is built, and 0\.001 MB is available\. "
        r"To make it fit, lower data\.cached_views or data\.image_size, or train more stages "
        r"\(model\.trainable_blocks\)\.$"
    )
    with pytest.raises(ConfigError, match=refusal):
        stage_cache(backbone, images, folder)
    assert not list(folder.glob("*.safetensors"))  # refused before building


def test_the_stage_cache_is_still_refused_when_the_disk_is_short(
    backbone, images, tmp_path, monkeypatch
):
    folder = tmp_path / "stages"
    monkeypatch.setattr(features.shutil, "disk_usage", lambda path: SimpleNamespace(free=1000))
    monkeypatch.setattr(features, "available_memory", lambda: 10**12)
    with pytest.raises(ConfigError, match=r"needs about 0\.\d+ MB in .*has 0\.001 MB free") as only:
        stage_cache(backbone, images, folder)
    assert "memory" not in str(only.value) and "GAPAN_CACHE" in str(only.value)

    monkeypatch.setattr(features, "available_memory", lambda: 1000)
    with pytest.raises(ConfigError, match=r"has 0\.001 MB free; and about .* of memory") as both:
        stage_cache(backbone, images, folder)
    assert str(both.value).count("needs") == 1  # one message for both shortages
    assert not list(folder.glob("*.safetensors"))


def test_the_memory_estimate_covers_what_the_cache_returns(backbone, images, tmp_path, monkeypatch):
    estimates = []
    real_check = features.check_cache_room
    monkeypatch.setattr(
        features,
        "check_cache_room",
        lambda folder, disk_need, memory_need: (
            estimates.append(memory_need) or real_check(folder, disk_need, memory_need)
        ),
    )
    train, evaluated = stage_cache(backbone, images, tmp_path / "stages")
    held = train.nbytes + evaluated["val"].nbytes
    (estimate,) = estimates
    # The returned maps, plus one view of the set being built held twice while it is gathered.
    assert estimate >= held + 2 * evaluated["val"].nbytes


def test_available_memory_is_read_where_the_system_reports_it():
    available = features.available_memory()
    if Path("/proc/meminfo").exists():
        assert isinstance(available, int) and available > 0
    else:
        assert available is None


def stacked_views(network: torch.nn.Module, images: ImageSet, views: int) -> torch.Tensor:
    """Every view in a list, stacked at the end: the plain way, holding every view twice."""
    outputs = []
    for view in range(views):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(AUGMENTATION_SEED + view)
            transform = train_transform(IMAGE_SIZE)
            outputs.append(run_network(network, images, transform, 4, "cpu", 0, torch.float16))
    return torch.stack(outputs, dim=1)


def test_views_are_gathered_into_one_tensor_as_they_come(backbone, images, monkeypatch):
    frozen, _ = split_backbone(backbone, 2)
    expected = stacked_views(frozen, images, 3)
    finished: list[weakref.ref] = []
    still_held = []
    real_run = features.run_network

    def run_and_watch(*args, **kwargs):
        still_held.append(sum(view() is not None for view in finished))
        maps = real_run(*args, **kwargs)
        finished.append(weakref.ref(maps))
        return maps

    monkeypatch.setattr(features, "run_network", run_and_watch)
    views = augmented_views(frozen, images, IMAGE_SIZE, 3, 4, "cpu")

    assert views.dtype == torch.float16 and torch.equal(views, expected)
    # While a view runs, at most the previous one is still held apart from the output.
    assert still_held == [0, 1, 1]
