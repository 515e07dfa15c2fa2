"""An adaptive study's rounds and decisions (sequential.json) as tables and one sentence, and a
warning when its paired differences are too skewed for the design's normal assumption."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from gapan.sequential import EFFECT, PRECISE, SKEWNESS_LIMIT, UNDECIDED, skewness
from reports.load import Results, baseline_setting, setting_order, usable_trials
from reports.stats import paired_differences

# Why a comparison took no more seeds, as the report says it: a precision stop is not a decision.
DECISION_WORDS = {
    EFFECT: "decided: the interval excludes zero",
    PRECISE: "precise enough, not decided",
    UNDECIDED: "open at the last round",
}


def sequential_data(results: Results) -> dict[str, Any]:
    """The settings' decisions, the rounds, and a sentence: why the study stopped, the seeds it
    ran against a fixed design of the most seeds, and the trial time that saved; and
    ``skewness_warning``, a paragraph when the paired differences are skewed beyond
    `gapan.sequential.SKEWNESS_LIMIT`, else None."""
    record = results.sequential or {}
    design = record.get("design", {})
    rows = []
    for setting, seen in record.get("settings", {}).items():
        rows.append(
            {
                "setting": setting,
                "pairs": seen.get("pairs"),
                "stopped in round": seen.get("round") if seen.get("decision") != UNDECIDED else "",
                "why": DECISION_WORDS.get(seen.get("decision"), seen.get("decision")),
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
        + (
            f" (about {saved / 3600:.2f} trial-hours fewer than that; not a comparison with a "
            "fixed design of equal power)"
            if math.isfinite(saved)
            else ""
        )
        + f"; the study stopped because {record.get('stopped', 'of an unknown reason')}."
    )
    return {
        "settings": pd.DataFrame(rows),
        "rounds": rounds,
        "summary": summary,
        "method": record.get("method", "unknown"),
        "alpha": float(design.get("alpha", 0.05)),
        "skewness_warning": skewness_warning(results),
    }


def skewness_warning(results: Results) -> str | None:
    """A paragraph when the study's paired differences (each setting minus the baseline, on the
    validation metric the seeds were chosen on) are skewed beyond the design's assumption."""
    baseline = baseline_setting(results)
    if baseline is None:
        return None
    usable = usable_trials(results)
    values = pd.DataFrame(
        {
            "setting": usable["setting"].astype(str),
            "seed": usable["seed"],
            "value": usable[results.metric].astype(float),
        }
    )
    differences = {
        setting: paired_differences(values, setting, baseline)["difference"].to_numpy()
        for setting in setting_order(results)
        if setting != baseline
    }
    found = skewness(differences)
    if not found.in_doubt:
        return None
    counted = sum(math.isfinite(value) for value in found.settings.values())
    direction = "upper" if found.pooled > 0 else "lower"
    spurious = "below" if found.pooled > 0 else "above"
    own = ", ".join(
        f"{results.knob} = {setting} ({found.settings[setting]:+.2f})" for setting in found.beyond
    )
    return (
        f"The paired differences are skewed: their sample skewness is {found.pooled:+.2f} over "
        f"{found.pairs} pairs of {counted} settings (each setting's differences centred "
        f"and scaled by their own standard deviation), beyond ±{SKEWNESS_LIMIT:g}"
        + (f"; on their own: {own}" if own else "")
        + ". The design assumes roughly normal differences; with skewed ones it reports an "
        "effect that is not there more often than the level asked, the more so the more skewed "
        "and the more settings, and mostly on the side away from the long tail (here: "
        f"{spurious} zero, as the {direction} tail is the long one). Read these decisions as "
        "suggestive and look at the seeds in the tail; a confirming run with more seeds, tested "
        "once, is less affected (docs/adaptive-seeds.md has the rates by skewness)."
    )


def sequential_method_note(alpha: float) -> str:
    return (
        "A round's decisions use the repeated intervals at "
        f"{alpha:g} / m: a comparison took no more seeds when its interval excluded zero "
        "(decided) or was no wider than the precision asked for on each side (precise enough, "
        "not decided: only the equivalence test says equivalent). With the p-values "
        "Holm-corrected, "
        f"a study with no real effect reports one with probability at most {alpha:g} however "
        "many seeds it ran, assuming the paired differences are roughly normal and that trials "
        "fail independently of their results. The mean difference where a comparison stopped "
        "is biased: one that stopped because its interval excluded zero overstates the effect "
        "(a difference that happened to come out large crosses the boundary sooner), the more "
        "so the earlier it stopped; one that stopped for precision understates it, towards "
        "zero. The intervals keep their coverage; the point estimates are not corrected "
        "(gapan/sequential.py; docs/adaptive-seeds.md)."
    )
