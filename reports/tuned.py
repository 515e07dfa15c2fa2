"""A tuned comparison's results: its confirmation study and each method's search, and the
table that shows their budgets were equal."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from gapan.space import CONFIRMATION, SEARCH_PREFIX
from reports.load import (
    STUDY_FILE,
    Results,
    ResultsError,
    load_results,
    study_record,
    usable_trials,
)


@dataclass(frozen=True)
class TunedParts:
    name: str
    question: str
    searches: dict[str, Results]  # method -> its search
    confirmation: Results
    equivalence_margin: float | None = None  # the comparison's, from its own study.json
    contrasts: dict[str, Any] | None = None  # the comparison's, from its own study.json


def tuned_parts(results_dir: Path | str) -> TunedParts | None:
    """The parts of a tuned comparison's folder, or None for any other study's folder.

    Raises:
        ResultsError: A part is missing or unreadable; the message names it.
    """
    directory = Path(results_dir)
    study = study_record(directory)  # an unreadable one: load_results names the problem
    if study.get("kind") != "tuned":
        return None
    methods = study.get("methods")
    if not isinstance(methods, dict) or not methods:
        raise ResultsError(f"{directory / STUDY_FILE} names no methods")
    searches = {method: load_results(directory / f"{SEARCH_PREFIX}{method}") for method in methods}
    return TunedParts(
        name=str(study.get("name") or directory.name),
        question=str(study.get("question") or ""),
        searches=searches,
        confirmation=load_results(directory / CONFIRMATION),
        equivalence_margin=study.get("equivalence_margin"),
        contrasts=study.get("contrasts"),
    )


def compared_results(
    results_dir: Path | str,
    equivalence_margin: float | None = None,
    parts: TunedParts | None = None,
) -> Results:
    """The study a report compares: the folder's own, or a tuned comparison's confirmation.

    A tuned comparison's confirmation takes the comparison's equivalence margin and contrasts
    where its own study.json has none; `equivalence_margin` replaces any margin.

    Args:
        results_dir: A study's results folder.
        equivalence_margin: The margin asked for; None keeps the study's own.
        parts: `tuned_parts(results_dir)` when already read.
    """
    parts = parts if parts is not None else tuned_parts(results_dir)
    if parts is None:
        results = load_results(results_dir)
    else:
        results = parts.confirmation
        if equivalence_margin is None:
            equivalence_margin = parts.equivalence_margin
    study = dict(results.study)
    if parts is not None and not study.get("contrasts") and parts.contrasts:
        study["contrasts"] = parts.contrasts
    if equivalence_margin is not None:
        study["equivalence_margin"] = equivalence_margin
    if study == results.study:
        return results
    return dataclasses.replace(results, study=study)


def budget_table(parts: TunedParts) -> pd.DataFrame:
    """Per method: trials run and completed, epochs, summed trial time and best validation."""
    rows = []
    for method, results in parts.searches.items():
        trials = results.trials
        usable = usable_trials(results)
        metric = results.metric
        best = usable[metric].max() if results.mode == "max" else usable[metric].min()
        rows.append(
            {
                "method": method,
                "trials": len(trials),
                "completed": int((trials["status"] == "completed").sum()),
                "epochs per trial": int(trials["epochs"].max()) if len(trials) else 0,
                "trial time (s)": float(trials["time_total_s"].sum()),
                f"best {metric}": float(best) if len(usable) else float("nan"),
            }
        )
    return pd.DataFrame(rows)
