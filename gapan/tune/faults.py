"""Failures a trial meets, named: injected faults for rehearsals, and out-of-memory reasons.

``GAPAN_FAULT=error@2,oom@1`` makes a study's trials fail on purpose, so that a researcher (and
the tests) can see a study survive a failing trial before a real one fails days into a run.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import torch

from gapan.config import ExperimentConfig
from gapan.tune.options import StudyError

FAULT_VARIABLE = "GAPAN_FAULT"  # e.g. "error@2,oom@1": rehearse how a study survives failures
FAULT_KINDS = ("error", "oom")
FAULTS_DIR = ".faults"  # inside the study folder: which injected faults have fired


class InjectedFault(RuntimeError):
    """A failure raised on purpose by GAPAN_FAULT, to check that a study survives it."""


def parse_faults(text: str) -> list[tuple[str, int]]:
    """``"error@2,oom@1"`` to ``[("error", 2), ("oom", 1)]``: what GAPAN_FAULT asks for.

    Each fault fires once per study, in the first trial that finishes that epoch: ``error``
    raises (Tune retries the trial from its last checkpoint, up to --max-failures), ``oom``
    raises torch.OutOfMemoryError as a GPU that ran out of memory does.
    """
    faults = []
    for part in filter(None, (item.strip() for item in text.split(","))):
        kind, _, epoch = part.partition("@")
        if kind not in FAULT_KINDS or not epoch.isdigit() or int(epoch) < 1:
            raise StudyError(
                f"{FAULT_VARIABLE}={text!r}: expected KIND@EPOCH items separated by commas, KIND "
                f"one of {', '.join(FAULT_KINDS)} and EPOCH from 1 (e.g. error@2,oom@1); got "
                f"{part!r}. Unset {FAULT_VARIABLE} to run without injected faults."
            )
        faults.append((kind, int(epoch)))
    return faults


def inject_fault(epoch: int, study_dir: Path) -> None:
    """Raise the fault GAPAN_FAULT names for `epoch`, unless an earlier trial already took it."""
    text = os.environ.get(FAULT_VARIABLE, "")
    for kind, at in parse_faults(text):
        if at != epoch:
            continue
        markers = study_dir / FAULTS_DIR
        markers.mkdir(parents=True, exist_ok=True)
        try:
            # Created atomically, so concurrent trials cannot both take the same fault.
            (markers / f"{kind}@{at}").open("x").close()
        except FileExistsError:
            continue
        message = f"injected by {FAULT_VARIABLE}={text} after epoch {epoch}"
        if kind == "oom":
            raise torch.OutOfMemoryError(f"CUDA out of memory ({message})")
        raise InjectedFault(message)


def out_of_memory_reason(error: BaseException, cfg: ExperimentConfig, gpu_share: float) -> str:
    """What ran out, and which settings to change."""
    batch = cfg.data.classes_per_batch * cfg.data.samples_per_class
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    held = f"this trial held {gpu_share:g} GPU" + (
        ", and its memory was capped to that share" if 0 < gpu_share < 1 else ""
    )
    return (
        f"out of GPU memory ({first_line[:300]}). Lower the batch size (data.classes_per_batch x "
        f"data.samples_per_class = {batch}, or train.eval_batch_size = "
        f"{cfg.train.eval_batch_size}) or raise --gpus-per-trial ({held}). Not retried: the same "
        "settings would run out again."
    )


def release_memory() -> None:
    """Free the GPU memory a finished or failed trial held, so the next trial on this worker
    starts clean. Reference cycles can keep tensors alive, hence the collection; on the CPU
    Python's own collector suffices, and a forced collection costs every trial a fraction of a
    second."""
    if torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()
