"""`run_tuned`: a tuned comparison, as studies that `run_part` runs one after another.

The study folder holds one search study per method (``search_<method>/``), each with the same
budget, and the comparison of their best configurations over fresh seeds (``confirm/``). Its
own study.json says what the parts are, for the report. Each part is an ordinary study: it
resumes, and is reported, like any other. Nothing is chosen on the test classes: a method's
best configuration is its best trial by the validation metric.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from gapan import results
from gapan.space import StudySpace
from gapan.tune.options import StudyError, StudyOptions, apply_options
from gapan.tune.parts import check_whole_study, run_part


def run_tuned(space: StudySpace, options: StudyOptions) -> Path:
    """Search every method, then confirm each one's best configuration; return the folder.

    Each part is run by `gapan.tune.parts.run_part`. With ``options.resume`` the parts
    already finished are kept as they are, the one that stopped is resumed and those never
    started are started.
    """
    space = apply_options(space, options)
    study_dir = options.study_dir
    check_whole_study(study_dir, space, options.resume)
    results.write_study(study_dir, space, {"folder": str(study_dir), **options.reporting})
    best = {}
    measured: tuple[Path, StudySpace] | None = None
    for method, search in space.searches().items():
        if measured is not None:
            share_reference(*measured, study_dir / search.name, search)
        part = run_part(search, options, study_dir)
        measured = (part, search)
        best[method] = best_configuration(part, search)
    confirmation = space.confirmation(best)
    if measured is not None:
        share_reference(*measured, study_dir / confirmation.name, confirmation)
    run_part(confirmation, options, study_dir)
    return study_dir


def share_reference(
    source: Path, source_space: StudySpace, target: Path, target_space: StudySpace
) -> None:
    """Give the part in `target` the pretrained reference measured in `source`, when both fix
    the same data and model: the backbone as it is, measured once per comparison, not once per
    part."""

    def measured_on(part: StudySpace) -> dict[str, Any]:
        return {k: v for k, v in part.fixed.items() if k.startswith(("data.", "model."))}

    reference = source / results.REFERENCE_FILE
    kept = target / results.REFERENCE_FILE
    if kept.exists() or not reference.exists():
        return
    if measured_on(source_space) != measured_on(target_space):
        return
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(reference, kept)


def best_configuration(part_dir: Path, search: StudySpace) -> dict[str, Any]:
    """The searched values of a search's best completed trial by its validation metric, as the
    trial trained them (its config.json, typed), so the confirmation runs exactly them."""
    trials = pd.read_csv(part_dir / results.TRIALS_FILE, dtype={"trial_id": str})
    scored = trials[(trials["status"] == "completed") & trials[search.metric].notna()]
    if scored.empty:
        raise StudyError(
            f"no trial of {part_dir} completed with a {search.metric}, so it has no best "
            "configuration to confirm; see its trials.csv for the errors, fix them and run "
            "again with a new --name"
        )
    order = scored.sort_values(search.metric, ascending=search.mode == "min", kind="stable")
    trial_id = order["trial_id"].iloc[0]
    config_path = part_dir / results.TRIALS_DIR / trial_id / "config.json"
    config = json.loads(config_path.read_text())
    chosen = {key: config[key] for key in search.search}
    for key, value in chosen.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise StudyError(f"{config_path}: {key} is {value}, not a usable setting")
    return chosen
