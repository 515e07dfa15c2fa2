"""The report's tables as plain DataFrames (the page renders them; the CSV files hold them)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from reports import stats
from reports.load import STATUSES, USABLE_STATUSES, Reference, Results, setting_order

# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def spreadsheet_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula, with a leading single quote.

    Numbers, and text that is a plain number (``-0.5``, ``+1e-3``: a spreadsheet reads it as
    that number), stay as they are.

        >>> spreadsheet_cell("=HYPERLINK(1)"), spreadsheet_cell("-1"), spreadsheet_cell(-2.5)
        ("'=HYPERLINK(1)", '-1', -2.5)
    """
    if (
        isinstance(value, str)
        and value.startswith(FORMULA_STARTS)
        and not _PLAIN_NUMBER.fullmatch(value)
    ):
        return "'" + value
    return value


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of a table to write as CSV: every text cell and header through `spreadsheet_cell`;
    numeric columns untouched."""
    safe = frame.copy()
    for column in safe.columns:
        values = safe[column]
        if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
            safe[column] = values.astype(object).map(spreadsheet_cell)
    safe.columns = [spreadsheet_cell(column) for column in safe.columns]
    return safe


def trials_table(results: Results) -> pd.DataFrame:
    """All trials: number, id, status, seed, setting, config values, metrics, cost and error."""
    trials = results.trials
    front = ["number", "trial_id", "status", "seed"]
    if results.is_ablation:
        front.append("setting")
    config = [column for column in trials.columns if column.startswith("config/")]
    validation = sorted(column for column in trials.columns if column.startswith("val_"))
    test = sorted(column for column in trials.columns if column.startswith("test_"))
    # The study's own metric first, so the eye finds it without scrolling.
    for group, column in ((validation, results.metric), (test, results.test_metric)):
        if column in group:
            group.remove(column)
            group.insert(0, column)
    table = trials[front + config + validation + test].copy()
    table = table.rename(columns={column: column.removeprefix("config/") for column in config})
    table["epochs"] = trials["epochs"]
    table["time_min"] = trials["time_total_s"] / 60
    table["gpus"] = trials["gpus"]
    table["gpu_time_min"] = trials["gpu_time_s"] / 60
    table["error"] = trials["error"]
    return table.reset_index(drop=True)


def excluded_table(results: Results) -> pd.DataFrame:
    """Trials left out of the statistics (failed, diverged, or no finite metric), with reasons."""
    trials = results.trials
    finite = np.isfinite(trials[results.metric].astype(float))
    left_out = ~(trials["status"].isin(USABLE_STATUSES) & finite)
    columns = ["number", "trial_id", "status", "seed"]
    if results.is_ablation:
        columns.append("setting")
    table = trials.loc[left_out, [*columns, "epochs", "error"]].copy()
    silent = table["error"].astype(str) == ""
    no_metric = table["status"].isin(USABLE_STATUSES) & silent
    table.loc[no_metric, "error"] = f"no finite {results.metric} was reported"
    interrupted = (table["status"] == "interrupted") & silent
    table.loc[interrupted, "error"] = "the study stopped before this trial finished"
    return table.rename(columns={"error": "reason"}).reset_index(drop=True)


# The settings table's row of the pretrained reference (reference.json).
REFERENCE_ROW = "pretrained (no training)"
STILL_IMPROVING = "still improving"


STEP_COST = "ms per step"


def pareto_trials(results: Results, quality_cost: pd.DataFrame) -> pd.DataFrame:
    """A search's trials on the front of `figures.quality_cost_data`, with their searched
    values, best metric first."""
    on_front = quality_cost[quality_cost["non_dominated"]]
    numbers = on_front["label"].str.removeprefix("trial ").astype(int)
    trials = results.trials.set_index(results.trials["number"].astype(int))
    searched = [column for column in trials if column.startswith("config/")]
    table = trials.loc[numbers, ["number", results.metric, *searched]].copy()
    table["cost"] = on_front["cost"].to_numpy()
    table.columns = [column.removeprefix("config/") for column in table.columns]
    return table.sort_values(results.metric, ascending=results.mode == "min")


def settings_table(
    validation_test: pd.DataFrame,
    *,
    reference: Mapping[str, float] | None = None,
    still_improving: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per setting: validation and test n, mean and 95% CI side by side.

    Args:
        validation_test: From `figures.validation_test_data`.
        reference: The pretrained reference's ``validation`` and ``test`` values
            (`reference.reference_data`): a first row `REFERENCE_ROW` with its values and no
            seed counts or intervals. None leaves the row out.
        still_improving: From `convergence.still_improving_data`: a last column
            `STILL_IMPROVING` with each setting's verdict. None leaves the column out.
    """
    wide = None
    for split, prefix in (("validation", "val"), ("test", "test")):
        own = validation_test[validation_test["split"] == split]
        if own.empty:
            continue
        own = own.drop(columns=["split", "std"]).set_index("setting")
        own.columns = [f"{prefix}_{column}" for column in own.columns]
        wide = own if wide is None else wide.join(own, how="outer")
    if wide is None:
        return pd.DataFrame(columns=["setting"])
    order = list(dict.fromkeys(validation_test["setting"]))
    table = wide.reindex(order).rename_axis("setting").reset_index()
    if still_improving is not None:
        verdicts = still_improving.set_index("setting")["verdict"]
        table[STILL_IMPROVING] = table["setting"].map(verdicts).fillna("")
    if reference is not None:
        row = {"setting": REFERENCE_ROW, "val_mean": reference.get("validation", math.nan)}
        if "test_mean" in table.columns:
            row["test_mean"] = reference.get("test", math.nan)
        if still_improving is not None:
            row[STILL_IMPROVING] = ""
        table = pd.concat([pd.DataFrame([row], columns=table.columns), table], ignore_index=True)
    # Seed counts stay whole numbers beside the reference row's empty ones.
    for column in ("val_n", "test_n"):
        if column in table.columns:
            table[column] = table[column].astype("Int64")
    return table


def still_improving_table(still_improving: pd.DataFrame) -> pd.DataFrame:
    """`convergence.still_improving_data` with readable column names for the page."""
    return still_improving.drop(columns="still_improving").rename(
        columns={
            "rise": "mean change, last quarter",
            "spread": "spread of final values",
            "verdict": STILL_IMPROVING,
        }
    )


def reference_settings(reference: Reference) -> list[tuple[str, str]]:
    """reference.json's description, data and model as (key, value) rows."""
    rows = [("description", reference.description)] if reference.description else []
    rows += flatten(reference.data, "data.")
    rows += flatten(reference.model, "model.")
    return rows


def comparisons_table(comparisons: pd.DataFrame, against: bool = False) -> pd.DataFrame:
    """The paired comparisons with readable column names for the page: each interval named by
    what it varies over, and the kind that decides named.

    Args:
        comparisons: `figures.comparison_data`'s comparisons.
        against: Keep the setting each row is compared with, as a column `against` (a table
            of contrasts, whose rows are compared with different settings).
    """
    seeds, classes = stats.OVER_SEEDS, stats.OVER_SEEDS_AND_CLASSES
    table = comparisons.rename(
        columns={
            "baseline": "against",
            "n_pairs": "pairs",
            "mean_difference": "difference",
            "ci_confidence": f"level ({seeds})",
            "ci_low": f"low ({seeds})",
            "ci_high": f"high ({seeds})",
            "p_value": f"p ({seeds})",
            "p_holm": f"Holm p ({seeds})",
            "class_ci_low": f"low ({classes})",
            "class_ci_high": f"high ({classes})",
            "class_p_value": f"p ({classes})",
            "class_p_holm": f"Holm p ({classes})",
            "decided_by": "decided by",
            "stopped_for": "stopped taking seeds",
            "equivalence_low": "equivalence low",
            "equivalence_high": "equivalence high",
            "effect_size_dz": "Cohen's d_z",
        }
    )
    dropped = [
        *([] if against else ["against"]),
        "statistic",
        "significant_over_seeds",
        "significant_over_classes",
        "equivalence_margin",
    ]
    if not comparisons.get("classes", pd.Series(dtype=float)).astype(float).gt(0).any():
        dropped += [column for column in table.columns if f"({classes})" in column]
        dropped += ["classes", "decided by"]
    if not comparisons.get("equivalence_margin", pd.Series(dtype=float)).astype(float).gt(0).any():
        dropped += ["equivalence low", "equivalence high", "equivalent"]
    return table.drop(columns=[column for column in dropped if column in table.columns])


def search_space_table(study: Mapping[str, Any]) -> pd.DataFrame:
    """The searched dimensions: key, type, range or values, log scale."""
    rows = []
    for key, dimension in study.get("search", {}).items():
        if "values" in dimension:
            domain = ", ".join(json.dumps(value) for value in dimension["values"])
        else:
            domain = f"{dimension.get('low')} to {dimension.get('high')}"
            if dimension.get("step") is not None:
                domain += f" step {dimension['step']}"
        rows.append(
            {
                "key": key,
                "type": dimension.get("type", "categorical"),
                "values": domain,
                "log scale": "yes" if dimension.get("log") else "",
            }
        )
    return pd.DataFrame(rows, columns=["key", "type", "values", "log scale"])


def study_settings(study: Mapping[str, Any]) -> list[tuple[str, str]]:
    """How the study ran: kind, metric, mode, knob, baseline, seeds, scheduler, resources."""
    rows = []
    for key in ("kind", "metric", "mode", "knob", "baseline", "seeds", "scheduler"):
        if key in study:
            rows.append((key, _plain_text(study[key])))
    for key, value in study.get("resources", {}).items():
        rows.append((f"resources per trial: {key}", _plain_text(value)))
    for method, overrides in study.get("methods", {}).items():
        rows.append((f"method {method}", _plain_text(overrides) or "(defaults)"))
    return rows


def fixed_settings(study: Mapping[str, Any]) -> list[tuple[str, str]]:
    """study.json's `fixed` as (key, value) rows."""
    return [(key, _plain_text(value)) for key, value in study.get("fixed", {}).items()]


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested JSON as (dotted key, text) rows, e.g. environment.json's versions."""
    rows = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows.extend(flatten(value, f"{name}."))
        else:
            rows.append((name, _plain_text(value)))
    return rows


def _plain_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return " ".join(value)
    return json.dumps(value)


def best_trial(results: Results) -> pd.Series | None:
    """The completed trial with the best validation metric (ties: the earliest), else None."""
    trials = results.trials
    values = trials[results.metric].astype(float)
    candidates = trials[(trials["status"] == "completed") & np.isfinite(values)]
    if candidates.empty:
        return None
    column = candidates[results.metric].astype(float)
    index = column.idxmax() if results.mode == "max" else column.idxmin()
    return candidates.loc[index]


def best_trial_config(results: Results, trial: pd.Series) -> list[tuple[str, str]]:
    """The best trial's id and searched config values as (key, value) rows."""
    rows = [("trial", f"#{int(trial['number'])} ({trial['trial_id']})")]
    for column in results.trials.columns:
        if column.startswith("config/"):
            rows.append((column.removeprefix("config/"), _cell_text(trial[column])))
    return rows


def best_trial_metrics(results: Results, trial: pd.Series) -> pd.DataFrame:
    """The best trial's metrics: metric, validation, test (NaN where it has none)."""
    columns = results.trials.columns
    metrics = sorted({c.removeprefix("val_") for c in columns if c.startswith("val_")})
    rows = [
        (metric, trial[f"val_{metric}"], trial.get(f"test_{metric}", math.nan))
        for metric in metrics
    ]
    return pd.DataFrame(rows, columns=["metric", "validation", "test"])


def _cell_text(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def status_counts(results: Results) -> dict[str, int]:
    """Trials per status, every status present as a key."""
    counts = results.trials["status"].value_counts()
    return {status: int(counts.get(status, 0)) for status in STATUSES}


def usable_seed_counts(results: Results) -> dict[str, int]:
    """Usable trials per setting, in report order (ablation, compare)."""
    trials = results.trials
    usable = trials["status"].isin(USABLE_STATUSES) & np.isfinite(
        trials[results.metric].astype(float)
    )
    counts = trials[usable].groupby("setting")["trial_id"].count()
    return {setting: int(counts.get(setting, 0)) for setting in setting_order(results)}


def few_seed_settings(results: Results) -> list[str]:
    """Settings with fewer usable seeds than a paired test needs."""
    return [s for s, n in usable_seed_counts(results).items() if n < stats.MIN_PAIRS_FOR_TEST]


def comparison_markdown(data: Mapping[str, Any]) -> str:
    """A comparison (`figures.comparison_data`) as a Markdown table for a README or a paper:
    each setting's difference with both intervals, labelled, their Holm p-values and the
    verdict, so a table is pasted from the results, never typed. The intervals are 95% (an
    adaptive study's over seeds: at the level Holm tests it at); the Holm p-values decide."""
    comparisons = data["comparisons"]
    by_classes = bool((comparisons["classes"].astype(float) > 0).any())
    # A contrast's row names both methods; a table against one baseline names it in its title.
    contrasts = data.get("family") == stats.CONTRASTS_FAMILY
    header = ["contrast" if contrasts else "setting", "seeds", "difference", "95% over seeds"]
    header.append("Holm p")
    if by_classes:
        header += ["95% over seeds and classes", "Holm p (classes)"]
    header.append("verdict")
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in comparisons.itertuples():
        cells = [
            f"{row.setting} − {row.baseline}" if contrasts else str(row.setting),
            str(row.n_pairs),
            difference_text(row.mean_difference),
            interval_text(row.ci_low, row.ci_high, row.ci_confidence),
            p_text(row.p_holm),
        ]
        if by_classes:
            cells += [
                interval_text(row.class_ci_low, row.class_ci_high),
                p_text(row.class_p_holm),
            ]
        cells.append(verdict_text(row, data["mode"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict_text(row: Any, mode: str) -> str:
    """`stats.verdict` in words, an equivalence with its margin."""
    verdict = stats.verdict(row, mode)
    if verdict == stats.EQUIVALENT:
        verdict += f" within ±{row.equivalence_margin:g}"
    return verdict


def difference_text(value: float) -> str:
    """A mean difference, signed, to four decimals."""
    return f"{value:+.4f}" if math.isfinite(value) else ""


def interval_text(low: float, high: float, confidence: float = stats.CONFIDENCE) -> str:
    """An interval, signed, to four decimals; its level only when it is not 95% (an adaptive
    study's interval over seeds, at the level Holm tests it at)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return ""
    level = "" if confidence == stats.CONFIDENCE else f" at {confidence:.1%}"
    return f"{low:+.4f} to {high:+.4f}{level}"


def p_text(value: float) -> str:
    """Two significant digits, but never rounded across alpha (0.0496 is not shown as 0.05)."""
    if not math.isfinite(value):
        return ""
    text = f"{value:.2g}"
    if (float(text) <= stats.ALPHA) != (value <= stats.ALPHA):
        text = f"{value:.3g}"
    return text


# The fidelity of a warm start's earlier study, as the report names it.
FIDELITY_NAMES = {
    "data.name": "data",
    "model.backbone_mode": "backbone mode",
    "train.epochs": "epochs",
    "data.image_size": "image size",
    "data.max_classes": "classes at most",
}


def warm_start_table(results: Results) -> pd.DataFrame | None:
    """The configurations a warm-started search began with: where each came from, at which
    fidelity, what it scored there, and its values here; None for a search started cold."""
    record = results.study.get("warm_start")
    if not isinstance(record, Mapping) or not record.get("seeds"):
        return None
    rows = []
    for seed in record["seeds"]:
        fidelity = seed.get("fidelity") or {}
        rows.append(
            {
                "earlier study": str(seed.get("study", "")),
                "trial": str(seed.get("trial_id", "")),
                **{name: fidelity.get(key) for key, name in FIDELITY_NAMES.items()},
                f"{results.metric} there": seed.get("value"),
                **{key: value for key, value in (seed.get("params") or {}).items()},
            }
        )
    return pd.DataFrame(rows)
