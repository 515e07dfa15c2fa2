"""Shared test helpers."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Property tests draw their examples on a 2-core machine that other jobs may share: no deadline
# per example and no "too slow" health check, so a busy machine slows them without failing them.
settings.register_profile(
    "shared-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("shared-machine")

ROOT = Path(__file__).resolve().parents[1]


def study_command(
    space_file: Path,
    results: Path,
    name: str,
    resume: bool,
    keep: str = "best",
    options: str = "",
) -> list[str]:
    """A Python command running one study in its own process (and its own Ray instance), so a
    test can kill it the way a crash would; `keep` is its --keep-checkpoints, `options` more
    StudyOptions arguments as Python text (", warm_start=(Path('x'),)")."""
    code = (
        "from pathlib import Path; from gapan.space import load_space; from gapan.tune import *; "
        f"run_study(load_space({str(space_file)!r}), StudyOptions(name={name!r}, "
        f"results_dir=Path({str(results)!r}), max_concurrent=1, num_cpus=2, dashboard_port=0, "
        f"resume={resume}, keep_checkpoints={keep!r}{options}))"
    )
    return [sys.executable, "-c", code]


# Tune copies trial results and its own state from a staging folder into the study folder every
# few seconds; a test that watches the study folder to time its kill asks for 0.5 s, so that what
# it sees is at most that old whatever the machine's speed.
WATCHED_STATE_PERIOD_S = "0.5"


def start_study(
    space_file: Path, results: Path, name: str, keep: str = "best", options: str = ""
) -> subprocess.Popen:
    """Start a study in a new process session, so `kill_study` can take its Ray instance too."""
    return subprocess.Popen(
        study_command(space_file, results, name, resume=False, keep=keep, options=options),
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": WATCHED_STATE_PERIOD_S},
    )


def kill_study(driver: subprocess.Popen) -> None:
    """SIGKILL the driver and the Ray instance it started: nothing gets to clean up."""
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()


def resume_study(
    space_file: Path, results: Path, name: str, keep: str = "best", options: str = ""
) -> subprocess.CompletedProcess:
    return subprocess.run(
        study_command(space_file, results, name, resume=True, keep=keep, options=options),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )


def trial_results(study_dir: Path, completed_only: bool = False) -> dict[str, str]:
    """Each trial folder's reported results by folder name; they carry timestamps, so a trial
    that ran again would change them."""
    reported = {
        path.parent.name: path.read_text()
        for path in (study_dir / "tune").glob("trial_*/result.json")
    }
    if completed_only:
        return {name: text for name, text in reported.items() if '"status": "completed"' in text}
    return reported


def assert_finished_trials_kept(before: dict[str, str], after: dict[str, str]) -> None:
    """Trials that had finished before a kill keep their results.

    Tune snapshots its state every few seconds, Optuna records a trial's end at once: a trial
    that ended just after Tune's last snapshot is resumed from its last checkpoint and repeats
    only its last epoch, with the same results. Anything more means it ran again.
    """
    for name, text in before.items():
        assert after[name].startswith(text), f"{name}: its reported results were rewritten"
        added = after[name][len(text) :].splitlines()
        assert len(added) <= 1, f"{name} ran again ({len(added)} more reports)"
        if added:
            last, repeated = json.loads(text.splitlines()[-1]), json.loads(added[0])
            for key in ("epoch", "val_map_at_r", "test_map_at_r", "status"):
                assert repeated[key] == last[key], f"{name}: its repeated last epoch differs"


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for a module's studies run in this process (`run_study` joins an
    initialised Ray), shut down after the module so the next one starts its own."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture
def private_caches(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep caches, scan records and prepared data out of the user's home."""
    monkeypatch.setenv("GAPAN_CACHE", str(tmp_path_factory.mktemp("gapan-cache")))
    monkeypatch.setenv("GAPAN_DATA_HOME", str(tmp_path_factory.mktemp("gapan-data")))
