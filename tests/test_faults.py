"""Faults a study survives and input it refuses, on real Ray Tune and Optuna.

Failures are real where a real trigger exists (a huge learning rate diverges); a trial that raises
or runs out of GPU memory is injected through GAPAN_FAULT, the switch a user has to rehearse the
same thing. Bad input must fail in seconds, before Ray starts, naming what to fix.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import ray
from conftest import (
    assert_finished_trials_kept,
    kill_study,
    resume_study,
    start_study,
    trial_results,
)
from PIL import Image

from gapan.config import ConfigError, from_flat
from gapan.results import TrialRecord
from gapan.space import load_space, parse_space
from gapan.train import load_checkpoint, train
from gapan.tune import StudyError, StudyOptions, run_study
from gapan.tune.cli import run_study_script
from gapan.tune.faults import FAULT_VARIABLE, FAULTS_DIR
from gapan.tune.folder import check_free_space, check_new
from gapan.tune.resume import check_nothing_lost, ended_trials
from gapan.tune.runner import disk_need, trained_parameters
from gapan.tune.search import StudySearcher

ROOT = Path(__file__).resolve().parents[1]

# Both learning rates train without clipping: 10.0 diverges within the first epoch.
FAULTY = '''"""Does a study survive failing trials?"""
KIND = "ablation"
METRIC = "val_map_at_r"
MODE = "max"
SEEDS = 2
FIXED = {"train.epochs": 3, "data.max_classes": 24, "flow.hidden": 32, "flow.depth": 1,
         "model.embed_dim": 64, "optim.grad_clip": 0.0, "align.temperature": 0.01}
SEARCH = {"optim.lr": {"type": "float", "values": [0.0003, 10.0]}}
BASELINE = 0.0003
'''


def optuna_trials(study_dir: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study_dir / "optuna.journal"))
    )
    return optuna.load_study(study_name=name, storage=storage).trials


@pytest.fixture(scope="module")
def faulty_study(tmp_path_factory) -> Path:
    """One study in which the first healthy trial runs out of GPU memory in epoch 1, the next
    one raises once after epoch 2, and the lr=10 trials diverge."""
    results_dir = tmp_path_factory.mktemp("faulty")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"env_vars": {FAULT_VARIABLE: "oom@1,error@2"}},
    )
    try:
        # One trial at a time, so that the faults land on different trials.
        return run_study(
            parse_space(FAULTY, "faulty"),
            StudyOptions(
                name="faulty",
                results_dir=results_dir,
                max_concurrent=1,
                max_failures=1,
            ),
        )
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_failed_and_diverged_trials_are_recorded_and_the_study_goes_on(faulty_study):
    trials = pd.read_csv(
        faulty_study / "trials.csv", dtype={"trial_id": str}, keep_default_na=False
    )
    assert len(trials) == 4
    assert sorted(trials["status"]) == ["completed", "diverged", "diverged", "failed"]

    diverged = trials[trials["status"] == "diverged"]
    assert set(diverged["config/optim.lr"]) == {10.0}
    assert set(diverged["epochs"]) == {0}  # each diverged in its first epoch
    assert diverged["error"].str.contains("non-finite").all()
    assert diverged["error"].str.contains("optim.lr").all()

    failed = trials[trials["status"] == "failed"].iloc[0]
    assert failed["config/optim.lr"] == 0.0003 and failed["epochs"] == 0
    for advice in (
        "out of GPU memory",
        "data.classes_per_batch",
        "--gpus-per-trial",
        "Not retried",
    ):
        assert advice in failed["error"]

    # The trial that raised after epoch 2 was retried from its checkpoint of epoch 1 and
    # finished: its epochs ran once each, and Tune kept the error it recovered from.
    completed = trials[trials["status"] == "completed"].iloc[0]
    assert completed["error"] == "" and completed["epochs"] == 3
    epochs = pd.read_csv(faulty_study / "epochs.csv", dtype={"trial_id": str})
    assert list(epochs.loc[epochs["trial_id"] == completed["trial_id"], "epoch"]) == [1, 2, 3]
    trial_dir = next((faulty_study / "tune").glob(f"trial_*_{completed['trial_id']}"))
    assert "injected by GAPAN_FAULT" in (trial_dir / "error.txt").read_text()
    assert sorted(p.name for p in (faulty_study / FAULTS_DIR).iterdir()) == ["error@2", "oom@1"]

    assert trials["node_id"].str.fullmatch(r"[0-9a-f]{56}").all()
    states = sorted(t.state.name for t in optuna_trials(faulty_study, "faulty"))
    assert states == ["COMPLETE", "FAIL", "FAIL", "FAIL"]


@pytest.mark.slow
def test_the_report_lists_failed_and_diverged_trials_with_their_reasons(faulty_study):
    built = subprocess.run(
        [sys.executable, "-m", "reports", str(faulty_study)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    excluded = pd.read_csv(faulty_study / "report_excluded.csv")
    assert sorted(excluded["status"]) == ["diverged", "diverged", "failed"]
    page = (faulty_study / "report.html").read_text()
    assert "Excluded trials (3)" in page and "out of GPU memory" in page


@pytest.mark.slow
def test_resuming_into_another_studys_folder_is_refused(faulty_study):
    other = parse_space(FAULTY.replace("[0.0003, 10.0]", "[0.0003, 0.001]"), "faulty")
    before = (faulty_study / "trials.csv").read_text()
    with pytest.raises(StudyError, match="belongs to another study.*different search"):
        run_study(other, StudyOptions(name="faulty", results_dir=faulty_study.parent, resume=True))
    assert not ray.is_initialized()
    assert (faulty_study / "trials.csv").read_text() == before


TINY_SEARCH = '''"""Which prior variance and learning rate retrieve best on a tiny slice?"""
KIND = "search"
METRIC = "val_map_at_r"
MODE = "max"
NUM_SAMPLES = 6
FIXED = {"train.epochs": 3, "data.max_classes": 24, "flow.hidden": 32, "flow.depth": 1,
         "model.embed_dim": 64}
SEARCH = {
    "prior.variance": {"type": "float", "low": 0.05, "high": 5.0, "log": True},
    "optim.lr": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
}
'''


@pytest.mark.slow
def test_a_killed_search_resumes_with_the_samplers_history(tmp_path):
    space_file = tmp_path / "tiny_search.py"
    space_file.write_text(TINY_SEARCH)
    study_dir = tmp_path / "results" / "tiny_search"
    driver = start_study(space_file, tmp_path / "results", "tiny_search")
    try:
        # Kill just after a trial past TPE's two random start-up trials has started: Optuna
        # has recorded it, Tune may not have; the resumed study must take it over, not add one.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert driver.poll() is None, "the study ended before it could be killed"
            reported = trial_results(study_dir)
            done = [name for name, text in reported.items() if '"status": "completed"' in text]
            if len(done) >= 2 and len(list((study_dir / "tune").glob("trial_*"))) > len(done):
                break
            time.sleep(0.05)
    finally:
        kill_study(driver)
    finished_before = trial_results(study_dir, completed_only=True)
    assert 2 <= len(finished_before) < 6

    resumed = resume_study(space_file, tmp_path / "results", "tiny_search")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    trials = pd.read_csv(study_dir / "trials.csv", dtype={"trial_id": str})
    assert len(trials) == 6 and set(trials["status"]) == {"completed"}
    assert_finished_trials_kept(finished_before, trial_results(study_dir))

    # The journal holds one finished Optuna trial per Tune trial: none lost, none doubled. A
    # trial Optuna handed out just before the kill and nobody ran is closed as failed.
    every = optuna_trials(study_dir, "tiny_search")
    ot_trials = [t for t in every if t.state.name == "COMPLETE"]
    assert len(ot_trials) == 6
    assert {t.state.name for t in every} <= {"COMPLETE", "FAIL"} and len(every) <= 7
    keys = ("prior.variance", "optim.lr")
    sampled = sorted(tuple(round(t.params[k], 12) for k in keys) for t in ot_trials)
    ran = sorted(zip(*(trials[f"config/{k}"].round(12) for k in keys), strict=True))
    assert ran == sampled
    assert len(set(sampled)) == 6
    # A searcher that lost its state would start afresh and repeat its start-up points.
    fresh = StudySearcher(parse_space(TINY_SEARCH, "tiny_search"), tmp_path)
    startup = [tuple(fresh.suggest(f"fresh_{i}")[k] for k in keys) for i in range(2)]
    by_number = [tuple(t.params[k] for k in keys) for t in ot_trials]
    assert by_number[:2] == startup  # so the check below can fail
    assert not set(by_number[2:]) & set(startup)


def test_a_trial_optuna_finished_after_tunes_last_snapshot_is_not_told_twice(tmp_path):
    # The race a killed driver leaves, step by step: the searcher's state is saved while a trial
    # runs; the trial ends (Optuna records it at once); the driver dies before the next save.
    # The resumed searcher gets the rerun of its last epoch, which Optuna would refuse.
    space = parse_space(TINY_SEARCH, "tiny_search")
    searcher = StudySearcher(space, tmp_path)
    config = searcher.suggest("trial_a")
    snapshot = str(tmp_path / "searcher.pkl")
    searcher.save(snapshot)
    result = {"val_map_at_r": 0.5, "training_iteration": 3}
    result.update({f"config/{key}": value for key, value in config.items()})
    searcher.on_trial_result("trial_a", result)
    searcher.on_trial_complete("trial_a", result)

    resumed = StudySearcher(space, tmp_path)
    resumed.restore(snapshot)
    resumed.on_trial_result("trial_a", {**result, "val_map_at_r": 0.25})
    resumed.on_trial_complete("trial_a", {**result, "val_map_at_r": 0.25})
    (trial,) = optuna_trials(tmp_path, "tiny_search")
    assert trial.state.name == "COMPLETE" and trial.value == 0.5  # the first record stands
    assert resumed.suggest("trial_b") is not None  # the search goes on


# Bad input: refused before Ray starts, in seconds, with the exit status 2.


def run_script(tmp_path: Path, *argv: str, name: str = "ablate_flow_depth") -> tuple[int, float]:
    started = time.perf_counter()
    status = run_study_script(name, "", ["--results-dir", str(tmp_path / "results"), *argv])
    return status, time.perf_counter() - started


def assert_refused(tmp_path, capsys, argv, *fragments, name="ablate_flow_depth") -> None:
    status, seconds = run_script(tmp_path, *argv, name=name)
    message = capsys.readouterr().err
    assert status == 2, message
    assert seconds < 20
    for fragment in fragments:
        assert fragment in message, message
    assert not ray.is_initialized()
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--set", "flow.dpeth=3"], ["'flow.dpeth'", "'flow.depth'"]),
        (["--set", "prior.variance=-1"], ["'prior.variance'", "greater than 0"]),
        (["--set", "anchors.count=0"], ["'anchors.count'", "at least 1"]),
        (["--set", "flow.depth=4"], ["flow.depth is searched by this study"]),
        (["--set", "no_equals_sign"], ["key=value"]),
        (["--epochs", "0"], ["'train.epochs'"]),
        (["--dataset", "cubb"], ["'data.name'", "cub"]),
        (["--dataset", "cub"], ["data.root is empty"]),
        (["--seeds", "0"], ["--seeds must be a whole number"]),
        (["--cpus-per-trial", "64"], ["--cpus-per-trial 64", "--num-cpus"]),
        (["--address", "127.0.0.1:1"], ["--address 127.0.0.1:1", "ray start --head"]),
        (["--resume"], ["holds no study to resume"]),
        (["--name", "../../outside"], ["'../../outside' is not a folder name"]),
        (["--name", "/tmp/absolute"], ["'/tmp/absolute' is not a folder name"]),
        (["--name", ""], ["'' is not a folder name"]),
        (["--cpus-per-trial", "0"], ["--cpus-per-trial must be more than 0"]),
        (["--gpus-per-trial", "1.5"], ["--gpus-per-trial must be 0, a fraction"]),
        (["--gpus-per-trial", "-1"], ["--gpus-per-trial must be 0, a fraction"]),
        (["--max-concurrent", "-1"], ["--max-concurrent must be a whole number"]),
        (["--dashboard-port", "70000"], ["--dashboard-port must be a port from 1 to 65535"]),
        (["--seeds", "auto", "--precision", "nan"], ["--precision must be 0 or a positive"]),
        (["--seeds", "auto", "--precision", "-0.01"], ["--precision must be 0 or a positive"]),
        (["--seeds", "auto", "--budget-minutes", "-5"], ["--budget-minutes must be a positive"]),
        (["--seeds", "auto", "--budget-minutes", "inf"], ["--budget-minutes must be a positive"]),
        (
            ["--smoke", "--seeds", "auto", "--min-seeds", "5", "--max-seeds", "3"],
            ["2 <= --min-seeds <= --max-seeds", "got 5 and 3"],
        ),
    ],
)
def test_bad_options_fail_in_seconds_without_starting_ray(tmp_path, capsys, argv, fragments):
    assert_refused(tmp_path, capsys, argv, *fragments)


def test_smoke_says_which_flags_it_overrides(tmp_path, capsys):
    argv = ["--smoke", "--seeds", "auto", "--min-seeds", "4", "--max-seeds", "6", "--resume"]
    status, _ = run_script(tmp_path, *argv)
    captured = capsys.readouterr()
    assert status == 2  # nothing to resume: refused after the flags were read
    assert (
        "--smoke: adaptive seeds take 2 seeds, then at most 3; --min-seeds and --max-seeds are "
        "checked but not used"
    ) in captured.out


def test_every_cost_the_help_offers_is_accepted():
    from gapan.space import with_objectives
    from gapan.tune.cli import study_parser

    text = " ".join(study_parser("search_gapan", "").format_help().split())
    offered = re.search(r"then a cost to minimise \(one of ([\w, ]+)\)", text).group(1)
    for cost in offered.split(", "):
        with_objectives(load_space("search_gapan"), ["map_at_r", cost])
    assert "time_per_epoch" not in text


def test_a_taken_dashboard_port_moves_to_a_free_one_and_says_so(capsys):
    from gapan.tune.cluster import dashboard_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        chosen = dashboard_port("127.0.0.1", port)
    assert chosen not in (port, 0)
    assert f"port {port} on 127.0.0.1 is taken" in capsys.readouterr().out
    with socket.socket() as free:
        free.bind(("127.0.0.1", chosen))  # it was free


def test_resuming_an_adaptive_study_without_seeds_auto_says_how(tmp_path, capsys):
    study_dir = tmp_path / "results" / "ablate_flow_depth"
    study_dir.mkdir(parents=True)
    design = {"min_seeds": 3, "max_seeds": 8, "comparisons": 4, "precision": 0.01}
    (study_dir / "study.json").write_text(json.dumps({"kind": "ablation", "sequential": design}))
    status, _ = run_script(tmp_path, "--resume")
    message = capsys.readouterr().err
    assert status == 2 and "holds no Tune experiment" not in message
    assert "is an adaptive study (--seeds auto): resume it with --resume --seeds auto " in message
    assert "--min-seeds 3 --max-seeds 8 --precision 0.01" in message
    (study_dir / "study.json").write_text(json.dumps({"kind": "ablation", "seeds": 3}))
    status, _ = run_script(tmp_path, "--resume", "--seeds", "auto")
    assert status == 2
    assert "not an adaptive one; resume it without --seeds auto" in capsys.readouterr().err
    # On splits, each split's study says what it was.
    (study_dir / "study.json").write_text(json.dumps({"kind": "ablation", "splits": [0, 1]}))
    (study_dir / "split_0").mkdir()
    (study_dir / "split_0" / "study.json").write_text(json.dumps({"sequential": design}))
    status, _ = run_script(tmp_path, "--resume", "--splits", "2")
    assert status == 2
    assert "split_0 is an adaptive study (--seeds auto)" in capsys.readouterr().err


def copy_of(study_dir: Path, tmp_path: Path) -> Path:
    """A copy of a finished study, recorded as made where the copy is (as if it had run there),
    for tests that damage one of its parts."""
    copy = tmp_path / study_dir.name
    shutil.copytree(study_dir, copy)
    record = json.loads((copy / "study.json").read_text())
    (copy / "study.json").write_text(json.dumps({**record, "folder": str(copy)}))
    return copy


@pytest.mark.slow
def test_a_moved_study_folder_is_not_resumed_where_its_state_names_another(faulty_study, tmp_path):
    moved = tmp_path / "faulty"
    shutil.copytree(faulty_study, moved)
    space = parse_space(FAULTY, "faulty")
    with pytest.raises(StudyError, match="was made as .*faulty and has moved since"):
        run_study(space, StudyOptions(name="faulty", results_dir=tmp_path, resume=True))
    assert not ray.is_initialized()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_a_resume_without_tunes_experiment_state_keeps_every_finished_trial(
    faulty_study, tmp_path, damage
):
    study_dir = copy_of(faulty_study, tmp_path)
    before = (study_dir / "trials.csv").read_text()
    (state,) = (study_dir / "tune").glob("experiment_state-*.json")
    if damage == "truncated":
        state.write_text(state.read_text()[: len(state.read_text()) // 2])
    else:
        state.unlink()
    space = parse_space(FAULTY, "faulty")
    problem = "damaged" if damage == "truncated" else "missing"
    with pytest.raises(StudyError, match=f"experiment state.*is {problem}.*Restore tune/"):
        run_study(space, StudyOptions(name="faulty", results_dir=tmp_path, resume=True))
    assert not ray.is_initialized()
    assert (study_dir / "trials.csv").read_text() == before


@pytest.mark.slow
def test_a_study_folder_without_its_study_json_is_never_overwritten(faulty_study, tmp_path):
    study_dir = copy_of(faulty_study, tmp_path)
    before = (study_dir / "trials.csv").read_text()
    (study_dir / "study.json").unlink()
    space = parse_space(FAULTY, "faulty")
    with pytest.raises(StudyError, match="no study.json; starting here would overwrite"):
        run_study(space, StudyOptions(name="faulty", results_dir=tmp_path))
    with pytest.raises(StudyError, match="Restore study.json from a backup to resume"):
        run_study(space, StudyOptions(name="faulty", results_dir=tmp_path, resume=True))
    assert not ray.is_initialized()
    assert (study_dir / "trials.csv").read_text() == before
    assert not (study_dir / "study.json").exists()

    (study_dir / "study.json").write_text('{"name": "faul')
    with pytest.raises(StudyError, match="study.json is damaged"):
        run_study(space, StudyOptions(name="faulty", results_dir=tmp_path, resume=True))


@pytest.mark.slow
def test_a_resume_never_writes_fewer_ended_trials_than_the_folder_holds(faulty_study):
    space = parse_space(FAULTY, "faulty")
    recorded = ended_trials(faulty_study, space)
    assert recorded == {"trials.csv": 4}
    one = TrialRecord(trial_id="a", number=0, config={}, epochs=[{"status": "completed"}])
    with pytest.raises(
        StudyError, match="holds 1 ended trials.*trials.csv: 4.*Nothing was written"
    ):
        check_nothing_lost(recorded, [one])
    check_nothing_lost(recorded, [one] * 4)


PLANTED = b"cos\nsystem\n(S'touch {marker}'\ntR."  # a pickle that runs a shell command


@pytest.mark.slow
@pytest.mark.parametrize("how", ["group-writable", "another user's"])
def test_a_resume_refuses_state_files_others_could_have_written(faulty_study, tmp_path, how):
    study_dir = copy_of(faulty_study, tmp_path)
    marker = tmp_path / "planted-code-ran"
    planted = study_dir / "tune" / "tuner.pkl"
    planted.write_bytes(PLANTED.replace(b"{marker}", str(marker).encode()))
    if how == "group-writable":
        planted.chmod(0o664)
    else:
        os.chown(planted, 65534, 65534)
    space = parse_space(FAULTY, "faulty")
    with pytest.raises(
        StudyError, match=r"tuner\.pkl (may be written by others|belongs to another)"
    ):
        run_study(space, StudyOptions(name="faulty", results_dir=tmp_path, resume=True))
    assert not marker.exists()
    assert not ray.is_initialized()


@pytest.mark.slow
def test_a_damaged_optuna_journal_is_named_on_resume(faulty_study, tmp_path):
    study_dir = copy_of(faulty_study, tmp_path)
    (study_dir / "optuna.journal").write_text("not a journal\n")
    space = parse_space(FAULTY, "faulty")
    with pytest.raises(StudyError, match="optuna.journal, the Optuna study, cannot be read"):
        run_study(space, StudyOptions(name="faulty", results_dir=tmp_path, resume=True))
    assert not ray.is_initialized()


@pytest.mark.slow
def test_the_disk_estimate_covers_a_running_trials_checkpoints_and_the_kept_weights(
    faulty_study, tmp_path
):
    space = parse_space(FAULTY, "faulty")
    # A running trial keeps up to 3 checkpoints of about this size (weights, AdamW's moments).
    cfg = from_flat({**space.fixed, "optim.lr": 0.0003, "train.epochs": 1})
    train(cfg, report=lambda metrics: None, run_dir=tmp_path)
    checkpoint = (tmp_path / "checkpoint.pt").stat().st_size
    trained, model = trained_parameters(cfg, num_classes=24, in_features=1280)
    assert 0.8 * checkpoint <= trained * 3 * 4 <= 1.25 * checkpoint
    # Once the study ended, no checkpoint is left; the one completed trial keeps its weights.
    assert not list((faulty_study / "tune").rglob("checkpoint_*"))
    kept = [path.stat().st_size for path in (faulty_study / "models").rglob("model.safetensors")]
    assert len(kept) == 1 and 0.9 * kept[0] <= model * 4 <= 1.1 * kept[0]
    running = 2 * 1 * 3 * trained * 3 * 4  # one trial at a time, and one ended, awaiting pruning
    assert disk_need(space, 24, 1280, "best", concurrent=1) == running + 2 * model * 4
    assert disk_need(space, 24, 1280, "last", concurrent=1) == running + 4 * model * 4
    assert disk_need(space, 24, 1280, "none", concurrent=1) == running
    with pytest.raises(StudyError, match="GB free. Free some space"):
        check_free_space(faulty_study, 2**62)


def test_a_results_folder_that_cannot_be_written_is_named(tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the results folder should be")
    status = run_study_script("ablate_flow_depth", "", ["--results-dir", str(blocker)])
    message = capsys.readouterr().err
    assert status == 2 and f"cannot write the study folder {blocker}" in message
    assert "Traceback" not in message and not ray.is_initialized()


def test_a_study_stopped_before_its_first_trial_starts_afresh(tmp_path, capsys):
    # What a study stopped while Ray was starting leaves: its space and an empty Optuna study.
    study_dir = tmp_path / "results" / "ablate_flow_depth"
    (study_dir / "tune").mkdir(parents=True)
    (study_dir / "study.json").write_text("{}")
    (study_dir / "optuna.journal").write_text("")
    status, _ = run_script(tmp_path, "--resume")
    assert status == 2
    assert "stopped before its first trial: run without --resume" in capsys.readouterr().err
    check_new(study_dir)
    # The lock of the refused resume stays: an empty file, held by no one.
    assert sorted(path.name for path in study_dir.iterdir()) == ["driver.lock", "study.json"]
    # A finished study is never cleared, even without its Tune folder.
    (study_dir / "trials.csv").write_text("trial_id,status\n")
    with pytest.raises(StudyError, match="already holds a study.*--resume"):
        check_new(study_dir)
    assert (study_dir / "trials.csv").exists()


def test_a_mistyped_search_dimension_fails_before_the_study(tmp_path):
    mistyped = TINY_SEARCH.replace('"optim.lr": {', '"optim.lrr": {')
    with pytest.raises(ValueError, match="optim.lrr.*'optim.lr'"):
        run_study(
            parse_space(mistyped, "tiny_search"), StudyOptions(name="x", results_dir=tmp_path)
        )
    assert not ray.is_initialized() and not any(tmp_path.iterdir())


def test_a_malformed_fault_switch_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(FAULT_VARIABLE, "boom@two")
    assert_refused(tmp_path, capsys, ["--smoke"], FAULT_VARIABLE, "'boom@two'", "error@2")


def image_folder(root: Path, counts: dict[str, int]) -> Path:
    for index, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for number in range(count):
            color = (index * 30 % 256, number * 60 % 256, 90)
            Image.new("RGB", (24, 24), color).save(root / name / f"{number}.png")
    return root


FOLDER = [
    "--dataset",
    "folder",
    "--set",
    "data.classes_per_batch=2",
    "data.samples_per_class=2",
    "data.val_fraction=0.5",
    "data.image_size=32",
    "--data-root",
]
# Sorted halves: a..d are seen (a, b train; c, d validation), e..h unseen.
CLASSES = {name: 3 for name in "abcdefgh"}


def test_a_missing_empty_or_flat_data_root_is_refused(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert_refused(tmp_path, capsys, [*FOLDER, str(missing)], str(missing), "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_refused(tmp_path, capsys, [*FOLDER, str(empty)], str(empty), "one folder per class")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (24, 24)).save(flat / "image.png")  # images without class folders
    assert_refused(tmp_path, capsys, [*FOLDER, str(flat)], str(flat), "one folder per class")


def test_a_truncated_image_is_refused_naming_the_file(tmp_path, capsys):
    root = image_folder(tmp_path / "images", CLASSES)
    broken = root / "e" / "1.png"
    broken.write_bytes(broken.read_bytes()[:40])
    assert_refused(tmp_path, capsys, [*FOLDER, str(root)], str(broken), "data.bad_images=skip")


def test_a_class_too_small_for_the_sampler_is_refused(tmp_path, capsys):
    root = image_folder(tmp_path / "images", {**CLASSES, "a": 1})
    assert_refused(tmp_path, capsys, [*FOLDER, str(root)], "a (1)", "data.samples_per_class=2")


# Security.


class Payload:
    """Unpickling this touches a file: what a hostile checkpoint could do, harmlessly."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


def test_a_checkpoint_holding_code_is_refused_unread(tmp_path):
    import torch

    touched = tmp_path / "touched"
    torch.save({"epoch": 1, "model": Payload(touched)}, tmp_path / "checkpoint.pt")
    with pytest.raises(ConfigError, match="checkpoint.pt holds more than tensors.*refused"):
        load_checkpoint(tmp_path / "checkpoint.pt")
    assert not touched.exists()


DASHBOARD_PROBE = """
import contextlib, io, json, socket, urllib.error, urllib.request
import ray
from gapan.tune import StudyOptions, start_ray
printed = io.StringIO()
with contextlib.redirect_stdout(printed):
    start_ray(StudyOptions(name="probe", num_cpus=1, dashboard_port=0))
url = printed.getvalue().split("Ray dashboard: http://")[1].split()[0]
try:
    status = urllib.request.urlopen(f"http://{url}/api/version", timeout=10).status
except urllib.error.HTTPError as error:
    status = error.code
# The same port on this machine's network address (the one Ray's nodes use) must not answer.
network_address = ray.util.get_node_ip_address()
try:
    socket.create_connection((network_address, int(url.rsplit(":", 1)[1])), timeout=5).close()
    from_network = "answered"
except OSError as error:
    from_network = type(error).__name__
print(json.dumps({"url": url, "status": status, "network_address": network_address,
                  "from_network": from_network}))
ray.shutdown()
"""


def run_probe(code: str) -> str:
    """Run `code` in its own process session (it starts Ray) and return what it printed; kill
    the session, Ray included, if it hangs."""
    probe = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = probe.communicate(timeout=180)
    finally:
        if probe.poll() is None:
            os.killpg(probe.pid, signal.SIGKILL)
            probe.wait()
    assert probe.returncode == 0, err[-3000:]
    return out


@pytest.mark.slow
def test_the_dashboard_listens_on_this_machine_only_and_asks_for_the_token():
    out = run_probe(DASHBOARD_PROBE)
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["url"].startswith("127.0.0.1:")
    if seen["network_address"] != "127.0.0.1":  # a machine with a network
        assert seen["from_network"] == "ConnectionRefusedError"
    assert seen["status"] == 401  # Ray's token authentication is on: no token, no answer


LISTENERS_PROBE = """
import json, os, re, subprocess, time, urllib.error, urllib.request
import ray
from gapan.tune import StudyOptions, start_ray

start_ray(StudyOptions(name="probe", num_cpus=1, dashboard_port=0))
ray.get(ray.remote(lambda: 1).remote())  # a worker process too, as a trial starts one
time.sleep(3)


def descendants(pid):
    found = {pid}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found |= descendants(int(entry))
    return found


ours = descendants(os.getpid())
listeners = []
for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines():
    if not set(map(int, re.findall(r"pid=(\\d+)", line))) & ours:
        continue
    host, port = line.split()[3].rsplit(":", 1)
    if host in ("127.0.0.1", "[::1]"):
        continue
    address = "127.0.0.1" if host in ("*", "0.0.0.0", "[::]") else host.strip("[]")
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/", timeout=5) as response:
            answer = f"{response.status} {response.read(200)!r}"
    except urllib.error.HTTPError as error:
        answer = str(error.code)
    except Exception as error:  # gRPC servers do not speak HTTP/1.1
        answer = type(error).__name__
    listeners.append({"host": host, "port": port, "answer": answer})
print(json.dumps(listeners))
ray.shutdown()
"""


@pytest.mark.slow
def test_every_listener_outside_loopback_wants_the_token_or_is_a_documented_metrics_page():
    if shutil.which("ss") is None:
        pytest.skip("needs ss (Debian's iproute2) to list listening sockets")
    out = run_probe(LISTENERS_PROBE)
    listeners = json.loads(out.strip().splitlines()[-1])
    assert listeners  # Ray's gRPC servers listen on every interface in this Ray version
    documented = (ROOT / "docs" / "when-things-go-wrong.md").read_text()
    for listener in listeners:
        answer = listener["answer"]
        if answer.startswith("200"):
            # What answers without the token must be one of the metrics pages the docs name.
            assert "# HELP" in answer, listener
            assert "Prometheus metrics" in documented
        else:
            assert answer == "401" or not answer[:1].isdigit(), listener
