"""What a study keeps of its trials (`--keep-checkpoints`, `results.KEEP_POLICIES`).

While a trial runs, Tune keeps its last `CHECKPOINTS_KEPT` checkpoints: what a resume or a retry
needs (weights, optimizer state, random state). Once a trial has ended, its checkpoints go, and
with them its optimizer state; its final weights stay, as safetensors beside its resolved config
and final metrics in ``models/<trial_id>/``, when the policy keeps them:

- ``best`` (the default): the best completed trial of each setting (ablations, comparisons) or
  of the whole study (searches), by the study's metric and mode;
- ``last``: every completed trial;
- ``none``: no trial.

A trial's checkpoints are deleted only once Tune's experiment state in the study folder records
the trial as ended (`PruneEndedTrials`): a driver killed before that would resume the trial from
the checkpoint its last snapshot names. Trials a stopped study left unfinished keep theirs, so
``--resume`` continues them. The runner settles every ended trial again after the run
(`settle_study`), which also cleans a study killed between a trial's end and its pruning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

from ray import tune

from gapan import results
from gapan.files import write_atomic
from gapan.train import CHECKPOINT, CONFIG, CheckpointError, load_checkpoint
from gapan.weights import save_safetensors_atomic

_log = logging.getLogger(__name__)

# Tune deletes an old checkpoint before its experiment-state snapshot records the new one; a
# driver killed in between would leave a trial pointing at a deleted checkpoint. With epochs
# shorter than the snapshot period the snapshot can lag two checkpoints: three kept bridge that.
CHECKPOINTS_KEPT = 3
DEFAULT_POLICY = "best"
# Whole new versions of the experiment state in the study folder after a trial ended before its
# checkpoints go: the first may be an upload that began before the end; the second began after.
SNAPSHOTS_BEFORE_PRUNING = 2


def policy_of(study_dir: Path) -> str:
    """The policy the study asked for (study.json's `keep_checkpoints`; older studies: best)."""
    try:
        return str(results.read_study(study_dir).get("keep_checkpoints", DEFAULT_POLICY))
    except (OSError, ValueError):
        return DEFAULT_POLICY


def trial_folders(study_dir: Path) -> dict[str, Path]:
    """Tune's folder of each trial (``tune/trial_<n>_<trial_id>``), by trial id."""
    folders = {}
    for path in (study_dir / results.TUNE_DIR).glob("trial_*_*"):
        if path.is_dir():
            folders[path.name.split("_", 2)[2]] = path
    return folders


def tune_checkpoints(trial_dir: Path) -> list[Path]:
    """A trial's Tune checkpoints, oldest first (Tune numbers them with leading zeros)."""
    return sorted(path for path in trial_dir.glob("checkpoint_*") if path.is_dir())


def settle_trial(
    study_dir: Path, trial_dir: Path, setting: str, metric: str, mode: str, policy: str
) -> None:
    """After a trial ended: keep its final weights if `policy` keeps them, then delete its Tune
    checkpoints. Safe to repeat: a trial without checkpoints is left as it is."""
    checkpoints = tune_checkpoints(trial_dir)
    if not checkpoints:
        return
    # A trial that diverged in its first epoch reported a checkpoint without weights.
    if policy != "none" and (checkpoints[-1] / CHECKPOINT).exists():
        _keep_if_chosen(study_dir, checkpoints[-1], trial_dir, setting, metric, mode, policy)
    for checkpoint in checkpoints:
        shutil.rmtree(checkpoint, ignore_errors=True)


def _keep_if_chosen(
    study_dir: Path,
    checkpoint: Path,
    trial_dir: Path,
    setting: str,
    metric: str,
    mode: str,
    policy: str,
) -> None:
    # Mapped: the optimizer's moments, most of the file, are never read.
    state = load_checkpoint(checkpoint / CHECKPOINT, mmap=True)
    metrics = state["metrics"]
    value = metrics.get(metric)
    if metrics.get("status") != "completed" or not isinstance(value, int | float):
        return  # a trial stopped early, diverged or failed: no final weights
    if not math.isfinite(value):
        return
    trial_id = trial_dir.name.split("_", 2)[2]
    rivals = [
        m for m in results.kept_models(study_dir) if m.setting == setting and m.trial_id != trial_id
    ]
    if policy == "best" and any(not results.better(value, rival.value, mode) for rival in rivals):
        return
    config = json.loads((checkpoint / CONFIG).read_text())
    write_model(
        study_dir / results.MODELS_DIR / trial_id,
        state["model"],
        config,
        metric,
        {
            "trial_id": trial_id,
            "setting": setting,
            "metrics": {k: v for k, v in metrics.items() if k.startswith(("val_", "test_"))}
            | {"epoch": metrics.get("epoch")},
        },
    )
    if policy == "best":
        for rival in rivals:
            shutil.rmtree(rival.folder, ignore_errors=True)


def write_model(
    folder: Path, weights: dict[str, Any], config: dict[str, Any], metric: str, record: dict
) -> None:
    """Write a kept model's folder whole or not at all: built beside it, then renamed."""
    building = folder.with_name(f".{folder.name}.building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    save_safetensors_atomic(weights, building / results.MODEL_WEIGHTS_FILE)
    write_atomic(building / results.MODEL_CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    record = {**record, "metric": metric}
    write_atomic(building / results.MODEL_METRICS_FILE, json.dumps(record, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(building, folder)


def settle_study(
    study_dir: Path,
    trials: list[tuple[str, str, str]],
    metric: str,
    mode: str,
    policy: str,
    finished: bool,
) -> None:
    """Settle every ended trial that still has checkpoints, then keep only what `policy` keeps.

    Args:
        trials: (trial id, status, setting) of the study's trials (trials.csv's columns);
            interrupted ones keep their checkpoints for a resume.
        finished: Every trial of the study ended. Then the checkpoints of a trial folder that
            no trial owns go too: a driver killed just after a trial's first checkpoint leaves
            a trial that Tune had not recorded, and the resumed study ran it again afresh.
    """
    folders = trial_folders(study_dir)
    if finished:
        owned = {trial_id for trial_id, _, _ in trials}
        for trial_id, folder in folders.items():
            if trial_id not in owned:
                for checkpoint in tune_checkpoints(folder):
                    shutil.rmtree(checkpoint, ignore_errors=True)
                with contextlib.suppress(OSError):
                    folder.rmdir()  # when nothing else is left in it
    for trial_id, status, setting in trials:
        if status in results.ENDED and trial_id in folders:
            try:
                settle_trial(study_dir, folders[trial_id], setting, metric, mode, policy)
            except (OSError, ValueError, CheckpointError) as error:
                print(f"warning: {folders[trial_id]} keeps its checkpoints: {error}", flush=True)
    _apply_policy(study_dir, policy, mode)
    models_dir = study_dir / results.MODELS_DIR
    if models_dir.is_dir() and not any(models_dir.iterdir()):
        models_dir.rmdir()


def gather_models(study_dir: Path, parts: list[Path], mode: str, policy: str) -> None:
    """Move the models the finished `parts` kept (an adaptive study's rounds) into the study's
    own folder, then keep only what `policy` keeps over all of them: the best of a setting is
    chosen over every round."""
    for part in parts:
        for folder in sorted((part / results.MODELS_DIR).glob("*")):
            if folder.is_dir() and not folder.name.startswith("."):
                target = study_dir / results.MODELS_DIR / folder.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(target, ignore_errors=True)
                os.replace(folder, target)
        with contextlib.suppress(OSError):
            (part / results.MODELS_DIR).rmdir()
    _apply_policy(study_dir, policy, mode)


def _apply_policy(study_dir: Path, policy: str, mode: str) -> None:
    """Delete the kept models that `policy` does not keep."""
    models = results.kept_models(study_dir)
    keep = results.chosen(models, policy, mode)
    for model in models:
        if model.trial_id not in keep:
            shutil.rmtree(model.folder, ignore_errors=True)


class PruneEndedTrials(tune.Callback):
    """Settle each trial once Tune's experiment state in the study folder records its end.

    Tune pickles this callback into its state for a resume, so it holds plain values only and
    reads the policy from study.json, which a resume rewrites with its own options.
    """

    def __init__(self, study_dir: str, knob: str | None, metric: str, mode: str):
        self.study_dir = study_dir
        self.knob = knob
        self.metric = metric
        self.mode = mode
        self._pending: dict[str, list[Any]] = {}  # trial path -> [setting, versions seen, last]
        self._seen: tuple[Any, str | None] = (None, None)  # (file, mtime, size) -> its digest

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pending": {}, "_seen": (None, None)}

    def _stamp(self) -> str | None:
        """A digest of the newest experiment state in the study folder, or None while it is
        being written: Tune uploads it in the background, truncating it first, so only a
        version that reads as whole JSON counts as a snapshot."""
        states = sorted(Path(self.study_dir, results.TUNE_DIR).glob("experiment_state-*.json"))
        if not states:
            return None
        try:
            info = states[-1].stat()
            key = (states[-1].name, info.st_mtime_ns, info.st_size)
            if key == self._seen[0]:
                return self._seen[1]
            text = states[-1].read_bytes()
            json.loads(text)
        except (OSError, ValueError):
            return None
        digest = hashlib.sha256(text).hexdigest()
        self._seen = (key, digest)
        return digest

    def _ended(self, trial: tune.experiment.Trial) -> None:
        setting = (
            ""
            if self.knob is None
            else results.setting_text((trial.config or {}).get(self.knob, ""))
        )
        if trial.path:
            self._pending[trial.path] = [setting, 0, self._stamp()]

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # Only a trial that reported its own end: Tune also completes the trials a Ctrl-C
        # stops, and a scheduler's stops are settled after the run, from its record.
        if (getattr(trial, "last_result", None) or {}).get("status") in results.REPORTED_ENDS:
            self._ended(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if not self._pending:
            return
        stamp = self._stamp()
        study_dir = Path(self.study_dir)
        policy = None
        for path, entry in list(self._pending.items()):
            # Two whole versions after the one seen at the trial's end: the first may come from
            # an upload that began before the end; the second began after the first was done.
            if stamp is not None and stamp != entry[2]:
                entry[1], entry[2] = entry[1] + 1, stamp
            if entry[1] < SNAPSHOTS_BEFORE_PRUNING:
                continue
            del self._pending[path]
            policy = policy or policy_of(study_dir)
            try:
                settle_trial(study_dir, Path(path), entry[0], self.metric, self.mode, policy)
            except (OSError, ValueError, CheckpointError) as error:
                # The runner settles every ended trial again after the run.
                _log.warning("could not settle %s yet: %s", path, error)
