"""A tuned comparison's runner without Ray: the best configuration it confirms, and the studies
it refuses before anything runs."""

import dataclasses
import json

import pandas as pd
import pytest

from gapan import results
from gapan.space import load_space, parse_space
from gapan.tune import StudyError, StudyOptions, apply_options, run_study
from gapan.tune.tuned import best_configuration
from tests.test_space import TUNED


def write_search(folder, rows, configs):
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder / results.TRIALS_FILE, index=False)
    for trial_id, config in configs.items():
        (folder / "trials" / trial_id).mkdir(parents=True)
        (folder / "trials" / trial_id / "config.json").write_text(json.dumps(config))


def test_the_best_trial_is_the_best_completed_one_by_validation_with_its_typed_values(tmp_path):
    search = parse_space(TUNED, "tuned").searches()["gapan"]
    rows = [
        {"trial_id": "a", "status": "completed", "val_map_at_r": 0.30, "test_map_at_r": 0.9},
        {"trial_id": "b", "status": "completed", "val_map_at_r": 0.35, "test_map_at_r": 0.1},
        {"trial_id": "c", "status": "diverged", "val_map_at_r": 0.50, "test_map_at_r": 0.5},
        {"trial_id": "d", "status": "completed", "val_map_at_r": 0.35, "test_map_at_r": 0.2},
    ]
    configs = {
        name: {"optim.lr": 0.001 * (i + 1), "flow.depth": i + 1, "train.seed": 0}
        for i, name in enumerate("abcd")
    }
    write_search(tmp_path / "search", rows, configs)
    # Never the test metric, never a diverged trial; a tie goes to the earlier trial.
    assert best_configuration(tmp_path / "search", search) == {"optim.lr": 0.002, "flow.depth": 2}
    lowest = dataclasses.replace(search, mode="min")
    assert best_configuration(tmp_path / "search", lowest) == {"optim.lr": 0.001, "flow.depth": 1}


def test_a_search_without_a_completed_trial_is_named(tmp_path):
    search = parse_space(TUNED, "tuned").searches()["gapan"]
    rows = [{"trial_id": "a", "status": "failed", "val_map_at_r": float("nan")}]
    write_search(tmp_path / "search", rows, {})
    with pytest.raises(StudyError, match="no trial of .* completed"):
        best_configuration(tmp_path / "search", search)


def test_a_tuned_study_is_never_started_twice_nor_resumed_with_other_settings(tmp_path):
    space = load_space("compare_tuned")
    options = StudyOptions(name="tuned", results_dir=tmp_path, smoke=True)
    study_dir = options.study_dir
    (study_dir / "search_gapan").mkdir(parents=True)
    (study_dir / "search_gapan" / results.STUDY_FILE).write_text("{}")
    with pytest.raises(StudyError, match="already holds a study; pass --resume"):
        run_study(space, options)
    (study_dir / results.STUDY_FILE).write_text(json.dumps({"name": "tuned", "kind": "tuned"}))
    with pytest.raises(StudyError, match="other options .*different .*metric"):
        run_study(space, dataclasses.replace(options, resume=True))
    assert json.loads((study_dir / results.STUDY_FILE).read_text()) == {
        "name": "tuned",
        "kind": "tuned",
    }  # refused before anything was written


def test_adaptive_rounds_pair_by_seed_skip_failures_and_keep_settings_as_text():
    from gapan.tune.adaptive import setting_differences

    # Methods "glow" and "None": text that pandas would read as missing.
    space = parse_space(ABLATION_OF_TEXT, "text")
    trials = pd.DataFrame(
        {
            "setting": ["glow", "None", "glow", "None", "glow", "None"],
            "seed": [0, 0, 1, 1, 2, 2],
            "status": ["completed", "completed", "completed", "failed", "completed", "completed"],
            "val_map_at_r": [0.30, 0.32, 0.31, float("nan"), 0.29, 0.33],
        }
    )
    assert setting_differences(trials, space) == {"None": pytest.approx([0.02, 0.04])}


ABLATION_OF_TEXT = '''"""Q?"""
KIND = "compare"
METRIC = "val_map_at_r"
MODE = "max"
SEEDS = 2
METHODS = {"glow": {}, "None": {"flow.family": "realnvp"}}
SEARCH = {"method": {"type": "categorical", "values": ["glow", "None"]}}
BASELINE = "glow"
'''


def test_the_backbone_learning_rate_is_searched_only_where_the_backbone_trains():
    space = load_space("compare_tuned")
    frozen = apply_options(space, StudyOptions(name="frozen"))
    partial = apply_options(
        space, StudyOptions(name="partial", overrides={"model.backbone_mode": "partial"})
    )
    assert "optim.backbone_lr" not in frozen.search
    assert "optim.backbone_lr" in partial.search
