"""An adaptive study's rounds and decisions (sequential.json) as tables and one sentence."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from reports.load import Results


def sequential_data(results: Results) -> dict[str, Any]:
    """The settings' decisions, the rounds, and a sentence: why the study stopped, the seeds it
    ran against a fixed design of the most seeds, and the trial time that saved."""
    record = results.sequential or {}
    design = record.get("design", {})
    rows = []
    for setting, seen in record.get("settings", {}).items():
        rows.append(
            {
                "setting": setting,
                "pairs": seen.get("pairs"),
                "decided in round": seen.get("round")
                if seen.get("decision") != "undecided"
                else "",
                "decision": seen.get("decision"),
                "mean difference": seen.get("mean"),
                "interval low": seen.get("low"),
                "interval high": seen.get("high"),
                "repeated p": seen.get("p_value"),
            }
        )
    rounds = pd.DataFrame(
        [
            {
                "round": entry.get("round"),
                "seeds": ", ".join(str(seed) for seed in entry.get("seeds", [])),
                "settings": ", ".join(str(setting) for setting in entry.get("settings", [])),
            }
            for entry in record.get("rounds", [])
        ]
    )
    trials = results.trials
    settings = len(results.study["search"][results.knob]["values"])
    most = int(design.get("max_seeds", 0))
    fixed = settings * most
    mean_time = float(trials["time_total_s"].mean()) if len(trials) else math.nan
    saved = (fixed - len(trials)) * mean_time
    summary = (
        f"Adaptive seeds: {len(trials)} trials in {len(rounds)} rounds, against {fixed} for "
        f"the most seeds ({most}) of every setting"
        + (f" (about {saved / 3600:.2f} trial-hours saved)" if math.isfinite(saved) else "")
        + f"; the study stopped because {record.get('stopped', 'of an unknown reason')}."
    )
    return {
        "settings": pd.DataFrame(rows),
        "rounds": rounds,
        "summary": summary,
        "method": record.get("method", "unknown"),
        "alpha": float(design.get("alpha", 0.05)),
    }


def sequential_method_note(alpha: float) -> str:
    return (
        "A round's decisions use the repeated intervals at "
        f"{alpha:g} / m: a comparison was decided when its interval excluded zero or was "
        "no wider than the precision asked for on each side. With the p-values Holm-corrected, "
        f"a study with no real effect reports one with probability at most {alpha:g} however "
        "many seeds it ran, assuming trials fail independently of their results "
        "(gapan/sequential.py; docs/adaptive-seeds.md)."
    )
