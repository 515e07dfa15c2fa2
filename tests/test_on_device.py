"""data.pipeline=device: images decoded once, cropped on the device, evaluated exactly as before."""

import math

import pytest
import torch

from gapan.config import from_flat
from gapan.data import build_splits, on_device
from gapan.inputs import finetune_inputs, on_device_inputs
from gapan.train import train

SLICE = {
    "model.backbone_mode": "finetune",
    "data.image_size": 48,
    "data.max_classes": 6,
    "data.classes_per_batch": 4,
    "data.num_workers": 0,
    "train.steps_per_epoch": 2,
    "flow.hidden": 32,
}


def test_crop_boxes_follow_random_resized_crop():
    side = 64
    boxes = on_device.crop_boxes(5000, side, torch.Generator().manual_seed(0))
    x0, y0, x1, y1 = boxes.unbind(dim=1)
    width, height = x1 - x0, y1 - y0
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= side).all() and (y1 <= side).all()
    assert (width >= 1).all() and (height >= 1).all()
    share = width * height / side**2
    # Rounding to whole pixels moves the share and the aspect ratio a little off their ranges.
    assert share.min() > 0.07 and share.max() <= 1.0
    ratio = width / height
    assert ratio.min() > 0.7 and ratio.max() < 1.45
    assert 0.4 < share.mean() < 0.7  # uniform in (0.08, 1), less the tries that did not fit
    again = on_device.crop_boxes(5000, side, torch.Generator().manual_seed(0))
    assert torch.equal(boxes, again)


def test_crops_keep_colours_and_flip_half_the_images():
    count, side, size = 400, 40, 24
    ramp = torch.linspace(0, 255, side).round().to(torch.uint8)  # dark left, bright right
    images = ramp.expand(count, 3, side, side).contiguous()
    images[:, 1] = 77  # the green channel is constant
    crops = on_device.random_resized_crops(images, size, torch.Generator().manual_seed(1))
    assert crops.shape == (count, 3, size, size) and crops.dtype == torch.float32
    assert crops.min() >= 0 and crops.max() <= 1
    torch.testing.assert_close(crops[:, 1], torch.full_like(crops[:, 1], 77 / 255))
    left, right = crops[:, 0, :, 0].mean(dim=1), crops[:, 0, :, -1].mean(dim=1)
    flipped = (left > right).float().mean().item()
    assert math.isclose(flipped, 0.5, abs_tol=0.1)


def test_evaluation_input_is_what_the_file_pipeline_makes():
    cfg = from_flat({**SLICE, "data.pipeline": "device"})
    splits = build_splits(cfg.data)
    device = torch.device("cpu")
    from_files = finetune_inputs(cfg, splits, device)
    from_memory = on_device_inputs(cfg, splits, device)
    for split in ("val", "test"):
        files = torch.cat([x for x, _ in from_files.eval_batches[split]()])
        memory = torch.cat([x for x, _ in from_memory.eval_batches[split]()])
        assert torch.equal(files, memory), split
    inputs, labels, classes = next(iter(from_memory.train_batches(1)))
    assert inputs.shape == (16, 3, 48, 48) and len(classes) == 4
    assert torch.equal(classes, labels.unique())


def test_a_second_trial_in_the_same_process_decodes_nothing(monkeypatch):
    cfg = from_flat({**SLICE, "data.pipeline": "device"})
    splits = build_splits(cfg.data)
    on_device_inputs(cfg, splits, torch.device("cpu"))
    monkeypatch.setattr(on_device, "DataLoader", None)  # any decoding would fail now
    on_device_inputs(cfg, build_splits(cfg.data), torch.device("cpu"))


@pytest.mark.slow
def test_training_on_device_inputs_runs_and_repeats_with_its_seed():
    cfg = from_flat({**SLICE, "data.pipeline": "device", "train.epochs": 2})
    first = train(cfg, lambda metrics: None)
    second = train(cfg, lambda metrics: None)
    assert first["status"] == "completed" and 0 <= first["test_map_at_r"] <= 1
    assert first["train_loss"] == second["train_loss"]
