"""Studies on real Ray Tune and Optuna: a small end-to-end ablation, and resuming a killed one."""

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import (
    ROOT,
    WATCHED_STATE_PERIOD_S,
    assert_finished_trials_kept,
    kill_study,
    resume_study,
    start_study,
    trial_results,
)

from gapan.space import load_space, parse_space
from gapan.tune import StudyError, StudyOptions, run_study
from gapan.tune.cluster import pending_trials_limit, trial_slots
from gapan.tune.search import scheduler_stops
from gapan.tune.trainable import _quiet_exit
from reports import build_report

TINY_ABLATION = '''"""Does a flow help on a tiny slice?"""
KIND = "ablation"
METRIC = "val_map_at_r"
MODE = "max"
SEEDS = 2
FIXED = {"train.epochs": 2, "data.max_classes": 24, "flow.hidden": 32}
SEARCH = {"flow.depth": {"type": "int", "values": [0, 2]}}
BASELINE = 0
'''


def optuna_trials(study_dir: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study_dir / "optuna.journal"))
    )
    return optuna.load_study(study_name=name, storage=storage).trials


@pytest.mark.slow
def test_an_ablation_runs_end_to_end_and_keeps_every_seed(tmp_path, ray_instance):
    space = parse_space(TINY_ABLATION, "tiny_ablation")
    study_dir = run_study(space, StudyOptions(name="tiny_ablation", results_dir=tmp_path))

    trials = pd.read_csv(study_dir / "trials.csv", dtype={"trial_id": str})
    assert len(trials) == 4
    assert set(trials["status"]) == {"completed"}
    # Every (setting, seed) pair ran exactly once, and each seed's own result is kept.
    pairs = sorted(zip(trials["config/flow.depth"], trials["seed"], strict=True))
    assert pairs == [(0, 0), (0, 1), (2, 0), (2, 1)]
    for column in ("val_map_at_r", "test_map_at_r", "val_recall_at_1", "time_total_s"):
        assert trials[column].between(0, 1e6).all(), column
    assert trials["val_map_at_r"].nunique() > 1

    epochs = pd.read_csv(study_dir / "epochs.csv", dtype={"trial_id": str})
    assert len(epochs) == 4 * 2
    assert set(epochs["trial_id"]) == set(trials["trial_id"])
    for trial_id in trials["trial_id"]:
        config = (study_dir / "trials" / trial_id / "config.json").read_text()
        assert '"data.max_classes": 24' in config

    ot_trials = optuna_trials(study_dir, "tiny_ablation")
    assert [t.state for t in ot_trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert sorted(t.value for t in ot_trials) == sorted(trials["val_map_at_r"])
    # Seed by seed (gapan.tune.trial_order), each trial's running time kept for the order.
    assert [t.params["train.seed"] for t in ot_trials] == [0, 0, 1, 1]
    assert sorted(t.user_attrs["time_total_s"] for t in ot_trials) == sorted(trials["time_total_s"])
    for name in ("study.json", "environment.json"):
        assert (study_dir / name).stat().st_size > 0
    # The pretrained reference, measured once on the same splits, for the report.
    reference = json.loads((study_dir / "reference.json").read_text())
    assert reference["model"]["backbone"] == "mobilenetv2_100"
    assert 0 < reference["metrics"]["test_map_at_r"] < 1
    assert 0 < reference["metrics"]["val_recall_at_1"] <= 1
    # The learning rate decays within each trial (warm-up is shorter than an epoch here).
    for _, curve in epochs.groupby("trial_id"):
        assert curve.sort_values("epoch")["lr"].is_monotonic_decreasing

    with pytest.raises(StudyError, match="--resume"):
        run_study(space, StudyOptions(name="tiny_ablation", results_dir=tmp_path))


@pytest.mark.slow
def test_a_search_with_early_stopping_runs_and_reports(tmp_path, ray_instance):
    from reports import build_report

    study_dir = run_study(
        load_space("search_gapan"),
        StudyOptions(name="search", results_dir=tmp_path, smoke=True, num_samples=5),
    )
    trials = pd.read_csv(study_dir / "trials.csv", dtype={"trial_id": str})
    assert len(trials) == 5
    assert set(trials["status"]) <= {"completed", "stopped_early"}
    # Stopped early: exactly the trials the scheduler stopped before their last epoch.
    stopped = trials.loc[trials["status"] == "stopped_early", "trial_id"]
    assert set(stopped) == scheduler_stops(study_dir) & set(
        trials.loc[trials["epochs"] < 2, "trial_id"]
    )
    searched = [c for c in trials if c.startswith("config/")]
    assert len(searched) == 7 and trials[searched].nunique().min() > 1  # TPE varied every knob
    finished = [t for t in optuna_trials(study_dir, "search_gapan") if t.state.is_finished()]
    assert len(finished) == 5
    assert build_report(study_dir).stat().st_size > 100_000


@pytest.mark.slow
def test_a_multi_objective_search_trades_the_metric_against_the_time_per_step(
    tmp_path, ray_instance
):
    options = StudyOptions(
        name="pareto",
        results_dir=tmp_path,
        smoke=True,
        num_samples=4,
        objectives=("map_at_r", "time_per_step"),
    )
    study_dir = run_study(load_space("search_gapan"), options)
    finished = [t for t in optuna_trials(study_dir, "search_gapan") if t.state.is_finished()]
    assert len(finished) == 4
    assert all(len(t.values) == 2 and t.values[1] > 0 for t in finished)
    study = json.loads((study_dir / "study.json").read_text())
    assert study["objectives"] == ["val_map_at_r", "time_per_step_s"] and study["scheduler"] is None
    report = build_report(study_dir).read_text()
    assert "Pareto front" in report and "The trials on the front" in report


# Trials of three epochs leave the kill below several trials to land in, however fast the machine
# (the study folder it watches is at most 0.5 s behind: conftest.start_study).
FINETUNE_ABLATION = TINY_ABLATION.replace(
    '"flow.hidden": 32}',
    '"flow.hidden": 32, "model.backbone_mode": "finetune", "data.image_size": 64, '
    '"data.max_classes": 8, "data.classes_per_batch": 4, "train.steps_per_epoch": 3}',
).replace('"data.max_classes": 24, ', "")


@pytest.mark.slow
def test_a_finetune_study_trains_the_backbone_end_to_end(tmp_path, ray_instance):
    space = parse_space(FINETUNE_ABLATION, "finetune_ablation")
    options = StudyOptions(name="finetune_ablation", results_dir=tmp_path, seeds=1)
    study_dir = run_study(space, options)
    trials = pd.read_csv(study_dir / "trials.csv", dtype={"trial_id": str})
    assert len(trials) == 2 and set(trials["status"]) == {"completed"}
    assert trials["test_map_at_r"].between(0, 1).all()
    for trial_id in trials["trial_id"]:
        config = (study_dir / "trials" / trial_id / "config.json").read_text()
        assert '"model.backbone_mode": "finetune"' in config


@pytest.mark.slow
def test_a_partial_study_trains_the_last_stage_on_cached_views(tmp_path, ray_instance):
    options = StudyOptions(
        name="partial",
        results_dir=tmp_path,
        smoke=True,
        overrides={"model.backbone_mode": "partial", "data.cached_views": 2},
    )
    study_dir = run_study(load_space("ablate_flow_depth"), options)
    trials = pd.read_csv(study_dir / "trials.csv", dtype={"trial_id": str})
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}
    assert trials["test_map_at_r"].between(0, 1).all()
    config = json.loads((study_dir / "trials" / trials["trial_id"][0] / "config.json").read_text())
    assert config["model.backbone_mode"] == "partial" and config["model.trainable_blocks"] == 1


@pytest.mark.slow
def test_a_tuned_comparison_confirms_each_methods_best_search_trial(tmp_path, ray_instance, capsys):
    options = StudyOptions(name="tuned", results_dir=tmp_path, smoke=True)
    study_dir = run_study(load_space("compare_tuned"), options)
    # The backbone as it is, measured once and given to every part.
    assert capsys.readouterr().out.count("Measuring the pretrained backbone") == 1
    references = {path.read_text() for path in study_dir.glob("*/reference.json")}
    assert len(references) == 1 and len(list(study_dir.glob("*/reference.json"))) == 7
    # Every form: GAPan alone, without a flow, the baselines, and GAPan added to each baseline.
    methods = list(load_space("compare_tuned").methods)
    assert {"proxy_anchor_gapan", "norm_softmax_gapan"} <= set(methods)
    confirmed = pd.read_csv(study_dir / "confirm" / "trials.csv", dtype={"trial_id": str})
    assert sorted(confirmed["setting"]) == sorted(methods * 2)
    assert set(confirmed["seed"]) == {1, 2}  # fresh seeds: the searches ran seed 0
    for method in methods:
        searched = pd.read_csv(study_dir / f"search_{method}" / "trials.csv", dtype=str)
        assert len(searched) == 2 and set(searched["seed"]) == {"0"}  # the same budget each
        scores = searched["val_map_at_r"].astype(float)
        best_id = searched["trial_id"][scores.idxmax()]
        best = json.loads(
            (study_dir / f"search_{method}" / "trials" / best_id / "config.json").read_text()
        )
        run_id = confirmed.loc[confirmed["setting"] == method, "trial_id"].iloc[0]
        ran = json.loads((study_dir / "confirm" / "trials" / run_id / "config.json").read_text())
        searched_keys = [c.removeprefix("config/") for c in searched if c.startswith("config/")]
        assert {key: ran[key] for key in searched_keys} == {key: best[key] for key in searched_keys}
    report = build_report(study_dir).read_text()
    assert "The searches behind each method" in report and "figure-history-norm_softmax" in report
    assert (study_dir / "search_gapan" / "report.html").exists()

    again = run_study(load_space("compare_tuned"), dataclasses.replace(options, resume=True))
    kept = pd.read_csv(again / "confirm" / "trials.csv", dtype={"trial_id": str})
    assert list(kept["trial_id"]) == list(confirmed["trial_id"])  # nothing ran again


def adaptive_command(space_file: Path, results: Path, resume: bool) -> list[str]:
    code = (
        "from pathlib import Path; from gapan.space import load_space; from gapan.tune import *; "
        f"run_study(load_space({str(space_file)!r}), StudyOptions(name='adaptive', "
        f"results_dir=Path({str(results)!r}), max_concurrent=1, num_cpus=2, dashboard_port=0, "
        f"adaptive=True, min_seeds=2, max_seeds=3, resume={resume}))"
    )
    return [sys.executable, "-c", code]


@pytest.mark.slow
def test_an_adaptive_study_killed_mid_round_resumes_that_round_and_reports(tmp_path):
    space_file = tmp_path / "adaptive.py"
    space_file.write_text(TINY_ABLATION)
    study_dir = tmp_path / "results" / "adaptive"
    driver = subprocess.Popen(
        adaptive_command(space_file, tmp_path / "results", resume=False),
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": WATCHED_STATE_PERIOD_S},
    )
    second = study_dir / "round_2"
    deadline = time.monotonic() + 300
    while not trial_results(second, completed_only=True) and time.monotonic() < deadline:
        assert driver.poll() is None, "the study ended before it could be killed"
        time.sleep(0.5)
    kill_study(driver)
    first_round = trial_results(study_dir / "round_1", completed_only=True)
    second_round = trial_results(second, completed_only=True)
    assert len(first_round) == 4 and len(second_round) >= 1

    resumed = subprocess.run(
        adaptive_command(space_file, tmp_path / "results", resume=True),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "round_1 finished before; kept as it is" in resumed.stdout
    assert trial_results(study_dir / "round_1") == first_round  # not one epoch again
    assert_finished_trials_kept(second_round, trial_results(second))
    trials = pd.read_csv(study_dir / "trials.csv", dtype={"trial_id": str})
    assert sorted(trials["seed"]) == [0, 0, 1, 1, 2, 2]  # seeds 0-1, then one more round
    sequential = json.loads((study_dir / "sequential.json").read_text())
    assert [entry["round"] for entry in sequential["rounds"]] == [1, 2]
    assert sequential["stopped"] in (
        "no comparison is open: each interval excludes zero or is precise enough",
        "3 seeds, the most allowed, with 1 comparison(s) still undecided",
    )
    report = build_report(study_dir).read_text()
    assert "How the answer was reached" in report and "group-sequential" in report


RESUMABLE = TINY_ABLATION.replace('"values": [0, 2]', '"values": [0, 1, 2]').replace(
    '"train.epochs": 2', '"train.epochs": 3'
)


@pytest.mark.slow
@pytest.mark.parametrize("keep", ["best", "last", "none"])
def test_a_killed_study_resumes_without_rerunning_finished_trials(tmp_path, keep):
    space_file = tmp_path / "resumable.py"
    space_file.write_text(RESUMABLE)
    study_dir = tmp_path / "results" / "resumable"
    driver = start_study(space_file, tmp_path / "results", "resumable", keep)
    deadline = time.monotonic() + 240
    while len(trial_results(study_dir, completed_only=True)) < 2 and time.monotonic() < deadline:
        assert driver.poll() is None, "the study ended before it could be killed"
        time.sleep(0.5)
    kill_study(driver)
    finished_before = trial_results(study_dir, completed_only=True)
    assert 2 <= len(finished_before) < 6

    resumed = resume_study(space_file, tmp_path / "results", "resumable", keep)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # Ray stops the trial workers at the end; nothing may read like a failure.
    assert "Exception ignored" not in resumed.stdout + resumed.stderr

    trials = pd.read_csv(study_dir / "trials.csv", dtype={"trial_id": str})
    pairs = sorted(zip(trials["config/flow.depth"], trials["seed"], strict=True))
    assert pairs == [(d, s) for d in (0, 1, 2) for s in (0, 1)]
    assert set(trials["status"]) == {"completed"}
    assert_finished_trials_kept(finished_before, trial_results(study_dir, completed_only=True))
    # The Optuna history is intact: six completed trials, one per grid point.
    ot_trials = [
        t
        for t in optuna_trials(study_dir, "resumable")
        if t.state == optuna.trial.TrialState.COMPLETE
    ]
    assert sorted((t.params["flow.depth"], t.params["train.seed"]) for t in ot_trials) == pairs
    # What stays: no checkpoint, and the final weights the policy keeps.
    assert not list((study_dir / "tune").rglob("checkpoint_*"))
    kept = sorted(path.name for path in (study_dir / "models").glob("*"))
    best = trials.loc[trials.groupby("setting")["val_map_at_r"].idxmax(), "trial_id"]
    expected = {"best": sorted(best), "last": sorted(trials["trial_id"]), "none": []}[keep]
    assert kept == expected


def test_tune_prepares_a_trial_for_every_slot_the_resources_allow(ray_instance):
    # Two CPUs, no GPU (the module's Ray instance).
    assert trial_slots(StudyOptions(name="slots", cpus_per_trial=1)) == 2
    assert trial_slots(StudyOptions(name="slots", cpus_per_trial=0.5)) == 4
    assert trial_slots(StudyOptions(name="slots", cpus_per_trial=0.5, max_concurrent=3)) == 3
    assert trial_slots(StudyOptions(name="slots", cpus_per_trial=4)) == 1
    with pending_trials_limit(3):
        assert os.environ["TUNE_MAX_PENDING_TRIALS_PG"] == "3"
    assert "TUNE_MAX_PENDING_TRIALS_PG" not in os.environ


def test_a_workers_exit_during_garbage_collection_is_silent_and_other_errors_are_not(
    capsys, monkeypatch
):
    class RaisesWhenCollected:
        def __init__(self, error: BaseException):
            self.error = error

        def __del__(self):
            raise self.error

    monkeypatch.setattr(sys, "unraisablehook", _quiet_exit)
    RaisesWhenCollected(SystemExit(1))  # as Ray's SIGTERM handler raises inside a callback
    assert capsys.readouterr().err == ""
    RaisesWhenCollected(ValueError("a real problem"))
    assert "ValueError: a real problem" in capsys.readouterr().err
