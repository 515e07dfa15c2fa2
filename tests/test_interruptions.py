"""A study stopped with Ctrl-C is unfinished until a resume ends it, and one folder has one
driver: real drivers (the study command line) in processes of their own."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, WATCHED_STATE_PERIOD_S, trial_results

from gapan.tune.cli import run_study_script
from gapan.tune.lock import DRIVER_FILE, study_lock

# Two settings, one seed: both trials run at once on two CPUs, so when Ctrl-C comes every
# planned trial exists, and only their statuses can tell the study is unfinished.
LONG_ABLATION = '''"""Two long trials side by side."""
KIND = "ablation"
METRIC = "val_map_at_r"
MODE = "max"
SEEDS = 1
FIXED = {"train.epochs": 120, "data.max_classes": 24, "flow.hidden": 32}
SEARCH = {"flow.depth": {"type": "int", "values": [0, 2]}}
BASELINE = 0
'''


def study_cli(space_file: Path, results: Path, *flags: str) -> list[str]:
    """The study command line (`gapan.tune.cli`) on a space file, as a command."""
    code = (
        "import sys; from gapan.tune.cli import run_study_script; "
        f"sys.exit(run_study_script({str(space_file)!r}, '', sys.argv[1:]))"
    )
    return [
        sys.executable,
        "-c",
        code,
        "--results-dir",
        str(results),
        "--num-cpus",
        "2",
        "--dashboard-port",
        "0",
        "--no-report",
        *flags,
    ]


def start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": WATCHED_STATE_PERIOD_S},
    )


def wait_for(condition, driver: subprocess.Popen, what: str, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert driver.poll() is None, f"the study ended before {what}: {driver.communicate()}"
        assert time.monotonic() < deadline, f"no {what} after {seconds} s"
        time.sleep(0.3)


def running_trials(study_dir: Path) -> int:
    """Trials that reported an epoch and have not completed."""
    return sum(
        '"status": "completed"' not in text for text in trial_results(study_dir).values() if text
    )


@pytest.mark.slow
def test_ctrl_c_leaves_an_unfinished_study_held_by_one_driver_that_a_resume_finishes(tmp_path):
    space_file = tmp_path / "long_ablation.py"
    space_file.write_text(LONG_ABLATION)
    results = tmp_path / "results"
    study_dir = results / "long"
    driver = start(study_cli(space_file, results, "--name", "long"))
    wait_for(lambda: running_trials(study_dir) == 2, driver, "two running trials")

    # While it runs: a second driver in the same folder is refused and leaves it as it was...
    study_file = (study_dir / "study.json").read_bytes()
    second = subprocess.run(
        study_cli(space_file, results, "--name", "long"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 2, second.stderr
    assert f"in use by another driver (process {driver.pid} on" in second.stderr
    assert (study_dir / "study.json").read_bytes() == study_file
    assert json.loads((study_dir / DRIVER_FILE).read_text())["pid"] == driver.pid
    # ...and a report says the study is running, and who runs it.
    report = subprocess.run(
        [sys.executable, "-m", "reports", str(study_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 2
    assert "is running (process" in report.stderr and str(driver.pid) in report.stderr
    assert "killed driver" not in report.stderr

    driver.send_signal(signal.SIGINT)  # what Ctrl-C sends to the driver
    _, stderr = driver.communicate(timeout=300)
    assert driver.returncode == 2, stderr
    assert re.search(r"stopped before all its trials ended \([01] of 2 ended\)", stderr), stderr
    assert "--resume" in stderr.splitlines()[-1]
    trials = pd.read_csv(study_dir / "trials.csv", dtype={"trial_id": str})
    # Tune ended both trials; the one that had not completed was stopped by no scheduler.
    assert "interrupted" in set(trials["status"]) <= {"completed", "interrupted"}
    assert trials["config/flow.depth"].notna().all()
    assert not (study_dir / DRIVER_FILE).exists()

    resumed = subprocess.run(
        study_cli(space_file, results, "--name", "long", "--resume"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = pd.read_csv(study_dir / "trials.csv", dtype={"trial_id": str})
    assert list(trials["status"]) == ["completed", "completed"]
    assert (trials["epochs"] == 120).all()


ADAPTIVE = LONG_ABLATION.replace('"train.epochs": 120', '"train.epochs": 30')


@pytest.mark.slow
def test_ctrl_c_in_a_round_of_adaptive_seeds_leaves_the_round_to_resume(tmp_path):
    space_file = tmp_path / "adaptive.py"
    space_file.write_text(ADAPTIVE)
    results = tmp_path / "results"
    study_dir = results / "adaptive"
    flags = ["--name", "adaptive", "--seeds", "auto", "--min-seeds", "2", "--max-seeds", "3"]
    driver = start(study_cli(space_file, results, *flags))
    second = study_dir / "round_2"
    wait_for(lambda: running_trials(second) == 2, driver, "two running trials in round 2")
    driver.send_signal(signal.SIGINT)
    _, stderr = driver.communicate(timeout=300)
    assert driver.returncode == 2, stderr
    assert "round_2 stopped before all its trials ended" in stderr
    # The driver ends through the study's own message, whatever Ray logs on the way (a busy
    # machine can make its last copy of the experiment state race the Ctrl-C, which it logs
    # with a traceback of its own): no exception passes through the project's code.
    assert "--resume" in stderr.splitlines()[-1]
    assert not re.search(r'File "[^"]*/(gapan|reports|studies)/', stderr), stderr
    statuses = pd.read_csv(second / "trials.csv")["status"]
    assert set(statuses) == {"interrupted"}
    sequential = json.loads((study_dir / "sequential.json").read_text())
    assert [entry["round"] for entry in sequential["rounds"]] == [1]  # round 2 not taken

    without_auto = run_study_script(
        str(space_file), "", ["--results-dir", str(results), "--name", "adaptive", "--resume"]
    )
    assert without_auto == 2

    resumed = subprocess.run(
        study_cli(space_file, results, *flags, "--resume"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert set(pd.read_csv(second / "trials.csv")["status"]) == {"completed"}
    merged = pd.read_csv(study_dir / "trials.csv")
    assert merged.groupby("round").size().loc[2] == 2 and set(merged["status"]) == {"completed"}


def test_a_second_driver_is_refused_before_it_writes_anything(tmp_path, capsys):
    study_dir = tmp_path / "results" / "ablate_flow_depth"
    with study_lock(study_dir):
        before = {path.name: path.read_bytes() for path in study_dir.iterdir()}
        status = run_study_script(
            "ablate_flow_depth", "", ["--results-dir", str(tmp_path / "results"), "--smoke"]
        )
        message = capsys.readouterr().err
        assert status == 2
        assert f"in use by another driver (process {os.getpid()} on" in message
        assert {path.name: path.read_bytes() for path in study_dir.iterdir()} == before
    assert not study_dir.exists()  # the lock's folder goes with it when nothing else is there


STUDY = {"kind": "ablation", "metric": "val_map_at_r", "mode": "max"}


def test_the_report_of_a_running_study_names_its_driver(tmp_path):
    from reports.load import UnfinishedStudyError, load_results

    study_dir = tmp_path / "study"
    study_dir.mkdir()
    (study_dir / "study.json").write_text(json.dumps(dict(STUDY, name="ablate_flow_depth")))
    part = study_dir / "round_1"
    part.mkdir()
    (part / "study.json").write_text(json.dumps(dict(STUDY, name="round_1")))
    with study_lock(study_dir):
        for folder in (study_dir, part):  # a part of a running study is running too
            with pytest.raises(UnfinishedStudyError, match=f"is running \\(process {os.getpid()}"):
                load_results(folder)
    with pytest.raises(UnfinishedStudyError, match="stopped before its first trial"):
        load_results(study_dir)  # the lock went with its driver


def test_a_stopped_early_trial_without_a_scheduler_never_ends_a_part(tmp_path, capsys):
    # Earlier versions wrote the trials a Ctrl-C ended as stopped early when every trial had
    # ended; without a scheduler no trial stops early, so such a part runs on when resumed.
    from gapan.space import parse_space
    from gapan.tune.parts import finished
    from gapan.tune.prune import main as prune_main

    space = parse_space(LONG_ABLATION, "long_ablation")
    part = tmp_path / "long_ablation"
    part.mkdir()
    (part / "study.json").write_text(json.dumps(space.to_dict()))
    rows = "trial_id,status,setting\na,completed,0\nb,stopped_early,2\n"
    (part / "trials.csv").write_text(rows)
    assert not finished(part, space)
    assert prune_main([str(part)]) == 2
    assert "unfinished (1 of 2 trials ended)" in capsys.readouterr().err
    scheduled = dataclasses.replace(space, scheduler="asha")
    (part / "study.json").write_text(json.dumps(scheduled.to_dict()))
    assert finished(part, scheduled)
