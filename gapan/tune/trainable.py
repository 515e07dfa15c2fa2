"""The trainer as a Tune trainable: `run_trial` resolves a trial's config and calls `train`."""

from __future__ import annotations

import logging
import math
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from gapan import results
from gapan.config import ExperimentConfig, from_flat
from gapan.space import StudySpace
from gapan.train import CheckpointError, train
from gapan.tune.faults import inject_fault, out_of_memory_reason, release_memory


def trial_config(config: dict[str, Any], space: StudySpace) -> ExperimentConfig:
    """The full config of a trial from the flat keys Tune hands it (a method's keys expanded)."""
    return from_flat(results.method_overrides(config, space))


def _quiet_exit(unraisable: Any) -> None:
    """Ray stops a trial worker with SIGTERM, and its handler raises SystemExit wherever the
    worker is, garbage collection included; Python then prints "Exception ignored" with a
    traceback that reads like a failure. Only that case is silenced."""
    if not isinstance(unraisable.exc_value, SystemExit):
        sys.__unraisablehook__(unraisable)


def run_trial(config: dict[str, Any], space: StudySpace, study_dir: str) -> None:
    """The Tune trainable: resolve the config, restore the checkpoint, train, report each epoch.

    Every report carries the Ray node the trial runs on (``node_id``). A GPU out-of-memory error
    ends the trial as ``failed`` with the reason (a retry would run out again); any other error
    goes to Tune, which retries the trial from its last checkpoint up to --max-failures.
    """
    cfg = trial_config(config, space)
    sys.unraisablehook = _quiet_exit
    # Ray Train logs every checkpoint it persists (one per epoch per trial) at INFO, burying
    # Tune's progress table; its warnings and errors still show.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    resources = tune.get_context().get_trial_resources().required_resources
    torch.set_num_threads(max(1, int(resources.get("CPU", 1))))
    gpu_share = resources.get("GPU", 0)
    if torch.cuda.is_available() and 0 < gpu_share < 1:
        # GPU fractions are logical in Ray: cap this trial's memory so neighbours keep theirs.
        torch.cuda.set_per_process_memory_fraction(gpu_share)
    node_id = ray.get_runtime_context().get_node_id()
    with tempfile.TemporaryDirectory(prefix="gapan-trial-") as work:
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            checkpoint.to_directory(work)

        def report(metrics: dict[str, Any]) -> None:
            if metrics.get("status") == "diverged":
                # The searcher records a non-finite value as a failed trial; schedulers skip it.
                metrics = {space.metric: math.nan, **metrics}
            else:
                inject_fault(metrics["epoch"], Path(study_dir))
            tune.report(
                {**metrics, "node_id": node_id}, checkpoint=tune.Checkpoint.from_directory(work)
            )

        failure = ""
        try:
            train(cfg, report, run_dir=work)
        except torch.OutOfMemoryError as error:
            failure = out_of_memory_reason(error, cfg, gpu_share)
            traceback.clear_frames(error.__traceback__)
        except CheckpointError as error:
            # A retry would read the same file. The message names the trial's working copy;
            # the file the user can act on is the trial's latest checkpoint_* folder in tune/.
            failure = (
                f"its last checkpoint could not be resumed from: {error} In the study folder, "
                "that is the trial's latest tune/trial_*/checkpoint_* folder."
            )
        except BaseException as error:
            # The traceback keeps train()'s frames, and with them the model, optimizer and
            # features on the GPU, alive while Tune handles the error: drop their variables.
            traceback.clear_frames(error.__traceback__)
            raise
        finally:
            release_memory()
        if failure:
            tune.report(
                {space.metric: math.nan, "status": "failed", "error": failure, "node_id": node_id}
            )
