"""The trainer on a real slice of the embedded data set: it learns, resumes exactly, and stops
cleanly on a non-finite loss."""

import json
import subprocess
import sys

import pytest
import torch

from gapan.backbone import build_backbone
from gapan.config import ConfigError, from_flat
from gapan.data import build_splits
from gapan.features import cached_features
from gapan.metrics import retrieval_metrics
from gapan.train import CHECKPOINT, CONFIG, load_checkpoint, main, train
from tests.conftest import ROOT

SLICE = {"data.max_classes": 30, "flow.hidden": 64}


class Stop(Exception):
    pass


def quiet(metrics):
    pass


@pytest.mark.slow
def test_training_beats_the_pretrained_embedding_on_unseen_classes():
    cfg = from_flat({**SLICE, "train.epochs": 6})
    splits = build_splits(cfg.data)
    features = cached_features(
        build_backbone(cfg.model),
        {"test": splits.test},
        cfg.data.image_size,
        256,
        torch.device("cpu"),
    )
    pretrained = retrieval_metrics(features["test"], splits.test.labels, with_nmi=False)
    reports = []
    final = train(cfg, reports.append)
    assert [r["epoch"] for r in reports] == list(range(1, 7))
    assert final["status"] == "completed"
    assert final["test_map_at_r"] > pretrained["map_at_r"] + 0.02
    assert final["train_loss"] < reports[0]["train_loss"]
    # Test metrics appear once, after the last epoch; validation every epoch.
    assert all("test_map_at_r" not in r for r in reports[:-1])
    assert all("val_map_at_r" in r for r in reports)


def test_a_stopped_run_resumes_where_it_stopped_and_ends_identically(tmp_path):
    cfg = from_flat({**SLICE, "train.epochs": 3})
    whole = train(cfg, quiet, tmp_path / "whole")

    def stop_after_second_epoch(metrics):
        if metrics["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, stop_after_second_epoch, tmp_path / "stopped")
    assert load_checkpoint(tmp_path / "stopped" / CHECKPOINT)["epoch"] == 2
    resumed_epochs = []
    resumed = train(cfg, lambda m: resumed_epochs.append(m["epoch"]), tmp_path / "stopped")
    assert resumed_epochs == [3]
    for key in ("val_map_at_r", "test_map_at_r", "test_recall_at_1", "train_loss"):
        assert resumed[key] == pytest.approx(whole[key], abs=1e-6), key


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
