"""The trainer on a real slice of the embedded data set: it learns, resumes exactly, and stops
cleanly on a non-finite loss."""

import json
import shutil
import subprocess
import sys
from itertools import pairwise

import numpy as np
import pytest
import torch

from gapan.backbone import build_backbone
from gapan.config import ConfigError, from_flat
from gapan.data import build_splits
from gapan.features import cached_features
from gapan.metrics import retrieval_metrics
from gapan.train import (
    CHECKPOINT,
    CONFIG,
    CheckpointError,
    build_scheduler,
    load_checkpoint,
    lr_factor,
    save_checkpoint,
    train,
)
from gapan.train.__main__ import main
from tests.conftest import ROOT

SLICE = {"data.max_classes": 30, "flow.hidden": 64}


class Stop(Exception):
    pass


def quiet(metrics):
    pass


@pytest.mark.slow
def test_training_beats_the_pretrained_embedding_on_unseen_classes():
    # Every class, at the main job's budget: on a family-disjoint split training gains a few
    # hundredths of MAP@R over the backbone as it is, and a slice of the classes is too small to
    # show it. Depth 0 is the quickest setting that trains the embedding.
    cfg = from_flat({"flow.depth": 0, "train.epochs": 8})
    splits = build_splits(cfg.data)
    features = cached_features(
        build_backbone(cfg.model),
        {"val": splits.val, "test": splits.test},
        cfg.data.image_size,
        256,
        torch.device("cpu"),
    )
    pretrained = {
        split: retrieval_metrics(features[split], images.labels, with_nmi=False)["map_at_r"]
        for split, images in (("val", splits.val), ("test", splits.test))
    }
    reports = []
    final = train(cfg, reports.append)
    assert [r["epoch"] for r in reports] == list(range(1, 9))
    assert final["status"] == "completed"
    assert final["val_map_at_r"] > pretrained["val"] + 0.015
    assert final["test_map_at_r"] > pretrained["test"] + 0.015
    assert final["train_loss"] < reports[0]["train_loss"]
    # Test metrics appear once, after the last epoch; validation every epoch.
    assert all("test_map_at_r" not in r for r in reports[:-1])
    assert all("val_map_at_r" in r for r in reports)


RESUMED = {**SLICE, "train.epochs": 3}  # the default schedule: warm-up, then cosine decay


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory):
    """The reports of an uninterrupted run, and the folder of the same run stopped after epoch 2
    (copy it before resuming: the tests share it)."""
    cfg = from_flat(RESUMED)
    reports = []
    train(cfg, reports.append, tmp_path_factory.mktemp("whole"))

    def stop_after_second_epoch(metrics):
        if metrics["epoch"] == 2:
            raise Stop

    stopped = tmp_path_factory.mktemp("stopped")
    with pytest.raises(Stop):
        train(cfg, stop_after_second_epoch, stopped)
    return reports, stopped


def assert_ends_identically(resumed, whole):
    for key in ("val_map_at_r", "test_map_at_r", "test_recall_at_1", "train_loss"):
        assert resumed[key] == pytest.approx(whole[key], abs=1e-6), key
    assert resumed["lr"] == pytest.approx(whole["lr"], rel=1e-12)  # far below 1e-6 at the floor


def test_a_stopped_run_resumes_where_it_stopped_and_ends_identically(three_epochs, tmp_path):
    reports, stopped = three_epochs
    run_dir = shutil.copytree(stopped, tmp_path / "run")
    assert load_checkpoint(run_dir / CHECKPOINT)["epoch"] == 2
    resumed_epochs = []
    resumed = train(from_flat(RESUMED), lambda m: resumed_epochs.append(m["epoch"]), run_dir)
    assert resumed_epochs == [3]
    assert_ends_identically(resumed, reports[-1])


def test_a_checkpoint_without_scheduler_state_resumes_on_the_same_curve(three_epochs, tmp_path):
    # What the trainer wrote before the schedule: no scheduler state, every group at its base rate.
    reports, stopped = three_epochs
    run_dir = shutil.copytree(stopped, tmp_path / "run")
    state = load_checkpoint(run_dir / CHECKPOINT)
    del state["scheduler"]
    for group in state["optimizer"]["param_groups"]:
        group["lr"] = group.pop("initial_lr")
    torch.save(state, run_dir / CHECKPOINT)
    resumed = train(from_flat(RESUMED), quiet, run_dir)
    assert_ends_identically(resumed, reports[-1])


def test_the_default_schedule_lowers_the_rate_every_epoch_down_to_its_floor(three_epochs):
    reports, _ = three_epochs
    cfg = from_flat(RESUMED)
    rates = [r["lr"] for r in reports]
    # The warm-up (a tenth of the steps) ends within the first epoch.
    assert cfg.optim.lr > rates[0] > rates[1] > rates[2]
    assert rates[2] == pytest.approx(cfg.optim.lr * cfg.optim.min_lr_ratio)


def test_a_constant_schedule_keeps_the_base_rate():
    cfg = from_flat(
        {**SLICE, "train.epochs": 2, "train.steps_per_epoch": 3, "optim.schedule": "constant"}
    )
    reports = []
    train(cfg, reports.append)
    assert [r["lr"] for r in reports] == [cfg.optim.lr] * 2


@pytest.mark.parametrize(("total_steps", "warmup_fraction"), [(100, 0.1), (37, 0.25), (10, 0.0)])
def test_the_rate_warms_up_linearly_then_decays_to_its_floor(total_steps, warmup_fraction):
    floor = 0.01
    factors = [lr_factor(step, total_steps, warmup_fraction, floor) for step in range(total_steps)]
    warmup = round(warmup_fraction * total_steps)
    assert factors[0] == pytest.approx(1 / (warmup + 1))  # near zero, but never a wasted step
    assert factors[warmup] == 1.0
    climbs = [after - before for before, after in pairwise(factors[: warmup + 1])]
    assert climbs == pytest.approx([1 / (warmup + 1)] * warmup)  # linear
    assert all(after < before for before, after in pairwise(factors[warmup:]))
    assert factors[-1] == pytest.approx(floor)
    assert lr_factor(total_steps + 5, total_steps, warmup_fraction, floor) == pytest.approx(floor)


def test_a_one_step_budget_takes_its_step_at_the_base_rate():
    assert lr_factor(0, 1, 0.1, 0.01) == 1.0


def test_every_parameter_group_follows_the_same_factor_of_its_own_rate():
    cfg = from_flat({"optim.warmup_fraction": 0.2})
    rates = (3e-4, 1e-5, 3e-2)  # head and flow, backbone, proxies
    weights = [torch.nn.Parameter(torch.zeros(2)) for _ in rates]
    optimizer = torch.optim.AdamW(
        [{"params": [w], "lr": lr} for w, lr in zip(weights, rates, strict=True)]
    )
    scheduler = build_scheduler(cfg, optimizer, total_steps=10)
    for step in range(10):
        factor = lr_factor(step, 10, 0.2, cfg.optim.min_lr_ratio)
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(
            [factor * lr for lr in rates]
        )
        sum(w.sum() for w in weights).backward()
        optimizer.step()
        scheduler.step()


def test_a_frozen_run_on_cached_features_loads_neither_timm_nor_torchvision():
    # A new trial worker would spend seconds importing them; with its features cached a frozen
    # trial needs no backbone, and must train exactly as one that builds it.
    overrides = {**SLICE, "train.epochs": 1}
    in_this_process = train(from_flat(overrides), quiet)  # builds the features, or finds them
    code = (
        "import sys; from gapan.config import from_flat; from gapan.train import train; "
        f"metrics = train(from_flat({overrides!r}), lambda m: None); "
        "print([name for name in ('timm', 'torchvision') if name in sys.modules]); "
        "print(metrics['val_map_at_r'])"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    loaded, val_map_at_r = run.stdout.splitlines()[-2:]
    assert loaded == "[]"
    assert float(val_map_at_r) == pytest.approx(in_this_process["val_map_at_r"], abs=1e-6)


def test_resolved_config_is_saved_and_a_different_config_is_refused(tmp_path):
    cfg = from_flat({**SLICE, "train.epochs": 1})
    train(cfg, quiet, tmp_path)
    assert json.loads((tmp_path / CONFIG).read_text())["data.max_classes"] == 30
    with pytest.raises(ConfigError, match="another config.*train.epochs"):
        train(from_flat({**SLICE, "train.epochs": 2}), quiet, tmp_path)


def test_a_non_finite_loss_stops_with_a_clear_status(tmp_path):
    # A huge learning rate without clipping blows the weights up within the first epoch.
    cfg = from_flat(
        {
            **SLICE,
            "train.epochs": 3,
            "optim.lr": 10.0,
            "optim.grad_clip": 0.0,
            "align.temperature": 0.01,
        }
    )
    reports = []
    final = train(cfg, reports.append, tmp_path)
    assert final["status"] == "diverged"
    assert "non-finite" in final["error"] and "optim.lr" in final["error"]
    assert reports[-1] is final and len(reports) <= 3


def test_baselines_train_with_the_same_code():
    for metric in ("proxy_anchor", "norm_softmax"):
        cfg = from_flat(
            {
                **SLICE,
                "train.epochs": 1,
                "loss.align_weight": 0.0,
                "loss.nll_weight": 0.0,
                "loss.metric": metric,
            }
        )
        final = train(cfg, quiet)
        assert final["status"] == "completed" and "train_metric" in final
        assert "train_nll" not in final


def test_command_line_rejects_a_mistyped_key(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["flow.dpeth=3"])
    assert exit_info.value.code == 2
    assert "flow.depth" in capsys.readouterr().err


class Payload:
    """A class that weights_only unpickling must refuse."""


def small_checkpoint(run_dir):
    """A checkpoint as the trainer writes one (the same keys), with small tensors."""
    state = {
        "epoch": 1,
        "model": {"weight": torch.arange(4000.0)},
        "criterion": {},
        "optimizer": {"state": {}, "param_groups": []},
        "scheduler": {},
        "torch_rng": torch.get_rng_state(),
        "metrics": {"epoch": 1},
    }
    save_checkpoint(run_dir, state)
    return run_dir / CHECKPOINT


DAMAGES = {
    "cut in half": lambda whole, path: path.write_bytes(whole[: len(whole) // 2]),
    "cut short at the end": lambda whole, path: path.write_bytes(whole[:-10]),
    "random bytes": lambda whole, path: path.write_bytes(
        np.random.default_rng(0).bytes(len(whole))
    ),
    "empty": lambda whole, path: path.write_bytes(b""),
    "another kind of file": lambda whole, path: torch.save([1, 2], path),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_checkpoint_is_named_with_what_to_do(tmp_path, damage):
    path = small_checkpoint(tmp_path)
    assert load_checkpoint(path)["epoch"] == 1
    DAMAGES[damage](path.read_bytes(), path)
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(path)
    message = str(raised.value)
    assert message.startswith(str(path))
    assert f"Delete {path} to restart the run from its first epoch" in message
    assert "put back an intact copy" in message
    assert "weights_only=False" not in message  # torch's advice does not mend a damaged file


def test_a_checkpoint_with_pickled_objects_is_refused_unread(tmp_path):
    path = tmp_path / CHECKPOINT
    torch.save({"epoch": 1, "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match="holds more than tensors.*refused unread"):
        load_checkpoint(path)


def test_save_checkpoint_leaves_no_temporary_file(tmp_path):
    small_checkpoint(tmp_path)
    small_checkpoint(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == [CHECKPOINT]


@pytest.mark.parametrize("damage", ["cut in half", "random bytes"])
def test_command_line_names_a_damaged_checkpoint_without_a_traceback(tmp_path, capsys, damage):
    path = small_checkpoint(tmp_path)
    DAMAGES[damage](path.read_bytes(), path)
    overrides = [f"{key}={value}" for key, value in {**SLICE, "train.epochs": 1}.items()]
    assert main([*overrides, "--run-dir", str(tmp_path)]) == 2
    printed = capsys.readouterr().err
    assert printed.startswith(f"error: {path} is not a readable checkpoint")
    assert "Traceback" not in printed
    assert path.exists()  # nothing is deleted for the user
