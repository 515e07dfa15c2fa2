"""The report's figures, each split in two as Optuna's visualization module does.

A `*_data` function computes plain tables from the results (tests check these, not pixels) and a
`draw_*` function turns them into a plotly figure. plotly.js reads every label as a small subset
of HTML (``<b>``, ``<br>``, ``<a href>``, a few entities), so every string that comes from the
results (settings, trial ids, config keys, metric names) passes through `page.plot_text` once,
which escapes ``&``, ``<`` and ``>``; quotes stay as they are (plotly.js would show ``&quot;``
literally).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from gapan.sequential import Design
from reports import stats
from reports.load import (
    Results,
    baseline_setting,
    same_setting,
    setting_numbers,
    setting_order,
    usable_trials,
)
from reports.page import plot_text
from reports.reference import reference_data
from reports.search import quiet_optuna

PALETTE = qualitative.Plotly
STATUS_COLORS = {
    "completed": "#2a7ab0",
    "stopped_early": "#e08a1e",
    "failed": "#c8414b",
    "diverged": "#7b4ea3",
    "interrupted": "#8a8a8a",
}
STATUS_SYMBOLS = {"completed": "circle-open", "stopped_early": "x-thin-open"}
STATUS_WORDS = {
    "completed": "completed",
    "stopped_early": "stopped early",
    "failed": "failed",
    "diverged": "diverged",
    "interrupted": "interrupted",
}
FONT = "system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif"
REFERENCE_LABEL = "pretrained backbone, no training"
REFERENCE_COLOR = "#6a3d9a"
STILL_IMPROVING_MARK = " (still improving)"


def number(value: float, digits: int = 4) -> str:
    """A short rendering of a float for hover text; a dash for NaN."""
    return "–" if value is None or not math.isfinite(float(value)) else f"{float(value):.{digits}g}"


def rgba(color: str, alpha: float) -> str:
    """A ``#rrggbb`` colour with transparency."""
    red, green, blue = (int(color[index : index + 2], 16) for index in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def style(figure: go.Figure, title: str, height: int, legend_below: bool = False) -> go.Figure:
    """The report's common look; `title` must already be escaped.

    Args:
        figure: The figure, changed in place.
        title: Escaped title text.
        height: Height in pixels.
        legend_below: Put the legend under the plot (figures with panel titles at the top).
    """
    legend = {"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "right", "x": 1}
    margin = {"l": 70, "r": 30, "t": 70, "b": 60}
    if legend_below:
        legend = {"orientation": "h", "yanchor": "top", "y": -0.22, "xanchor": "left", "x": 0}
        margin["b"] = 110
    figure.update_layout(
        title={"text": title, "x": 0.0, "xanchor": "left", "font": {"size": 16}},
        template="plotly_white",
        font={"family": FONT, "size": 13},
        height=height,
        margin=margin,
        legend=legend,
        hoverlabel={"font": {"family": FONT}},
    )
    return figure


def axis_kind(settings: Sequence[str]) -> str:
    """The x axis for these settings: `log` for positive numbers spanning more than a decade,
    `linear` for other numbers, `category` for anything else."""
    numbers = setting_numbers(settings)
    if numbers is None:
        return "category"
    if min(numbers) > 0 and max(numbers) / min(numbers) > 10:
        return "log"
    return "linear"


def _positions(settings: Sequence[str], axis: str) -> list[Any]:
    if axis == "category":
        return [plot_text(setting) for setting in settings]
    return [float(setting) for setting in settings]


def add_reference_line(
    figure: go.Figure,
    level: float | None,
    name: str = REFERENCE_LABEL,
    color: str = REFERENCE_COLOR,
) -> None:
    """The pretrained reference as a dashed horizontal line across the whole plot.

    The line lives on a hidden x axis from 0 to 1 laid over the figure's own, so it spans the
    plot whatever the setting axis is (numbers, log, categories) and stays out of the grouping
    of the figure's category markers; one offset group keeps several such lines from being
    spread apart (`scattermode="group"`). Nothing is drawn for None or NaN.
    """
    if level is None or not math.isfinite(level):
        return
    figure.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[level, level],
            xaxis="x2",
            offsetgroup="reference",
            mode="lines",
            name=name,
            line={"dash": "dash", "color": color, "width": 2},
            hovertext=[f"{name}: {number(level)}"] * 2,
            hoverinfo="text",
        )
    )
    figure.update_layout(
        xaxis2={"overlaying": "x", "range": [0, 1], "visible": False, "fixedrange": True}
    )
    # The trace gives the legend entry and keeps the level inside the y range; on a category axis
    # plotly leaves an overlaid trace undrawn, so the line itself is also drawn as a shape.
    figure.add_hline(y=level, line={"dash": "dash", "color": color, "width": 2})


def _setting_axis(figure: go.Figure, settings: Sequence[str], axis: str, title: str, **where):
    positions = _positions(settings, axis)
    if axis == "category":
        figure.update_xaxes(
            type="category",
            categoryorder="array",
            categoryarray=positions,
            title_text=title,
            **where,
        )
    else:
        figure.update_xaxes(
            type=axis,
            tickvals=positions,
            ticktext=[plot_text(setting) for setting in settings],
            title_text=title,
            **where,
        )


# (1) The metric against the knob.


def metric_by_setting_data(results: Results) -> dict[str, Any]:
    """Every usable trial's validation metric per setting, and each setting's mean and 95% CI.

    Returns:
        ``points``: trial_id, setting, seed, status, value, one row per usable trial;
        ``summary``: `stats.SUMMARY_COLUMNS` per setting in report order; ``axis``: "log",
        "linear" or "category"; ``metric``, ``knob``, ``baseline`` (None when study.json's
        baseline names no setting), ``settings`` (the order) and ``reference`` (the pretrained
        backbone's validation value, None without reference.json).
    """
    settings = setting_order(results)
    reference = reference_data(results)
    usable = usable_trials(results)
    points = pd.DataFrame(
        {
            "trial_id": usable["trial_id"].astype(str),
            "setting": usable["setting"].astype(str),
            "seed": usable["seed"],
            "status": usable["status"],
            "value": usable[results.metric].astype(float),
        }
    ).reset_index(drop=True)
    return {
        "metric": results.metric,
        "knob": results.knob,
        "baseline": baseline_setting(results),
        "settings": settings,
        "axis": axis_kind(settings),
        "points": points,
        "summary": stats.summarize_settings(points, settings),
        "reference": None if reference is None else reference["validation"],
    }


def draw_metric_by_setting(data: dict[str, Any]) -> go.Figure:
    """Seeds as faint points, the mean as a line with 95% CI error bars, the baseline and the
    pretrained reference dashed."""
    figure = go.Figure()
    axis, points, summary = data["axis"], data["points"], data["summary"]
    positions = dict(zip(data["settings"], _positions(data["settings"], axis), strict=True))
    for status in ("completed", "stopped_early"):
        own = points[points["status"] == status]
        if own.empty:
            continue
        figure.add_trace(
            go.Scatter(
                x=[positions[setting] for setting in own["setting"]],
                y=own["value"],
                mode="markers",
                name=f"one seed ({STATUS_WORDS[status]})",
                marker={"symbol": STATUS_SYMBOLS[status], "size": 9, "color": "#7a8591"},
                hovertext=[
                    f"trial {plot_text(row.trial_id)}<br>seed {number(row.seed)}"
                    f"<br>{STATUS_WORDS[status]}<br>{number(row.value)}"
                    for row in own.itertuples()
                ],
                hoverinfo="text",
            )
        )
    shown = summary[summary["n"] > 0]
    figure.add_trace(
        go.Scatter(
            x=[positions[setting] for setting in shown["setting"]],
            y=shown["mean"],
            mode="lines+markers",
            name="mean ± 95% CI",
            line={"color": "#1f4e79", "width": 2},
            marker={"size": 9, "color": "#1f4e79"},
            error_y={
                "type": "data",
                "array": (shown["ci_high"] - shown["mean"]).fillna(0),
                "arrayminus": (shown["mean"] - shown["ci_low"]).fillna(0),
                "thickness": 1.5,
                "width": 6,
            },
            hovertext=[
                f"{plot_text(data['knob'])} = {plot_text(row.setting)}<br>mean {number(row.mean)}"
                f"<br>95% CI {number(row.ci_low)} to {number(row.ci_high)}<br>n = {row.n}"
                for row in shown.itertuples()
            ],
            hoverinfo="text",
        )
    )
    baseline = data["baseline"]
    if baseline is not None and baseline in set(shown["setting"]):
        level = float(shown.loc[shown["setting"] == baseline, "mean"].iloc[0])
        ends = [positions[data["settings"][0]], positions[data["settings"][-1]]]
        figure.add_trace(
            go.Scatter(
                x=ends,
                y=[level, level],
                mode="lines",
                name=f"baseline mean ({plot_text(data['knob'])} = {plot_text(baseline)})",
                line={"dash": "dash", "color": "#8a8a8a", "width": 1},
                hoverinfo="skip",
            )
        )
    add_reference_line(figure, data.get("reference"))
    _setting_axis(figure, data["settings"], axis, plot_text(data["knob"]))
    figure.update_yaxes(title_text=plot_text(data["metric"]))
    title = f"{plot_text(data['metric'])} against {plot_text(data['knob'])}"
    return style(figure, title, 440, legend_below=True)


# (2) Each setting against the baseline, paired by seed.


# What each contrast is compared with: study.json's `contrasts` pair a method with another (an
# add-on with the loss it adds to, a depth with no flow), named in each row.
CONTRAST_AGAINST = "the method it is contrasted with"
CONTRASTS_TITLE = f"Each method against {CONTRAST_AGAINST}"


# An adaptive study chose its seeds on the validation metric: what that means for its other
# numbers (here and in `adaptive_test_caveat`), in the words of every report that shows them.
ADAPTIVE_CLASSES_CAVEAT = (
    "The interval over classes is a fixed-sample one: it does not account for the adaptive "
    "choice of seeds."
)


def adaptive_test_caveat(what: str = "these") -> str:
    """Why an adaptive study's comparisons on the test classes (`what`) are descriptive."""
    return (
        f"this study chose its seeds on validation, so read {what} as descriptive: they do not "
        "account for that choice"
    )


def is_contrasts(family: str) -> bool:
    """Whether a Holm family (`stats.FAMILIES`) is the contrasts'."""
    return family == stats.CONTRASTS_FAMILY


def compared_with(family: str, baseline: str = "baseline") -> str:
    """What each row of a Holm family is compared with, in words: `CONTRAST_AGAINST` for the
    contrasts, else `baseline`."""
    return CONTRAST_AGAINST if is_contrasts(family) else baseline


def contrast_pairs(results: Results) -> list[tuple[str, str]]:
    """study.json's `contrasts` as (setting, the setting it is compared with), both named as the
    study's settings, in report order; a contrast naming a setting the study did not run is
    left out (`missing_contrasts` names it)."""
    settings = setting_order(results)
    found = []
    for setting in settings:
        for named, against in (results.study.get("contrasts") or {}).items():
            if not same_setting(setting, named):
                continue
            match = [other for other in settings if same_setting(other, against)]
            if match and match[0] != setting:
                found.append((setting, match[0]))
            break
    return found


def missing_contrasts(results: Results) -> list[str]:
    """The contrasts of study.json that `contrast_pairs` leaves out, as "setting − against"."""
    kept = {(setting, against) for setting, against in contrast_pairs(results)}
    return [
        f"{named} − {against}"
        for named, against in (results.study.get("contrasts") or {}).items()
        if not any(
            same_setting(setting, named) and same_setting(other, against) for setting, other in kept
        )
    ]


def comparison_families(results: Results) -> list[str]:
    """The Holm families a study compares, each with its own table: against the baseline
    (when study.json's baseline names a setting) and the contrasts (when it declares any)."""
    if not results.is_ablation:
        return []
    found = [stats.BASELINE_FAMILY] if baseline_setting(results) is not None else []
    if results.study.get("contrasts"):
        found.append(stats.CONTRASTS_FAMILY)
    return found


def comparison_data(
    results: Results, column: str | None = None, family: str = stats.BASELINE_FAMILY
) -> dict[str, Any]:
    """Paired comparisons of settings, over seeds and over classes, as one Holm family.

    Args:
        results: An ablation or comparison.
        column: The metric compared; the study's validation metric by default. An adaptive
            study's seeds were chosen on that one, so only it gets the sequential statistics.
        family: `stats.BASELINE_FAMILY`, each setting against the baseline; or
            `stats.CONTRASTS_FAMILY`, each of study.json's `contrasts` against the setting it
            names (fixed-sample tests, even in an adaptive study, whose seeds were chosen for
            the baseline's family).

    Returns:
        ``comparisons``: one row per setting (`stats.COMPARISON_COLUMNS` and
        `stats.CLASS_COLUMNS`; its `baseline` column names the setting it is compared with),
        empty when there is no baseline or no contrast; ``pairs``: setting, seed, difference,
        one row per paired seed; ``classes``: setting, class, queries, difference (the mean over
        paired seeds), empty without per-class scores of this metric; ``family``; ``holm_family``,
        the family in words; and ``metric``, ``knob``, ``baseline`` (the baseline setting, None
        for the contrasts or when study.json's baseline names no setting), ``mode``, ``margin``,
        ``sequential``.
    """
    if family not in stats.FAMILIES:
        raise ValueError(f"family must be one of {', '.join(stats.FAMILIES)}; got {family!r}")
    column = column or results.metric
    baseline = baseline_setting(results) if family == stats.BASELINE_FAMILY else None
    settings = setting_order(results)
    if is_contrasts(family):
        compared = contrast_pairs(results)
    elif baseline is not None:
        compared = [(setting, baseline) for setting in settings if setting != baseline]
    else:
        compared = []
    usable = usable_trials(results, column)
    values = pd.DataFrame(
        {
            "setting": usable["setting"].astype(str),
            "seed": usable["seed"],
            "value": usable[column].astype(float),
        }
    )
    class_values = per_class_values(results, usable, column)
    margin = equivalence_margin(results)
    adaptive = "sequential" in results.study and column == results.metric
    adaptive = adaptive and family == stats.BASELINE_FAMILY
    design = Design(**results.study["sequential"]) if adaptive else None
    pair_frames, class_frames = [], []
    if not compared:
        comparisons = pd.DataFrame(columns=stats.COMPARISON_COLUMNS + stats.CLASS_COLUMNS)
    else:
        comparisons = (
            stats.sequential_comparisons(values, baseline, settings, design)
            if design is not None
            else stats.compare_pairs(values, compared)
        )
        seed_pairs = {}
        for setting, against in compared:
            pairs = stats.paired_differences(values, setting, against)
            seed_pairs[setting] = pairs
            pair_frames.append(pairs.assign(setting=setting)[["setting", "seed", "difference"]])
            if class_values is not None:
                class_frames.append(_class_means(class_values, setting, against, pairs["seed"]))
        comparisons = stats.with_class_intervals(
            comparisons, seed_pairs, class_values, margin, design=design
        )
        if design is not None:
            # Why each comparison took no more seeds: a precision stop is not a decision.
            stops = (results.sequential or {}).get("settings", {})
            comparisons["stopped_for"] = [
                stops.get(str(setting), {}).get("decision", "")
                for setting in comparisons["setting"]
            ]
    pairs = (
        pd.concat(pair_frames, ignore_index=True)
        if pair_frames
        else pd.DataFrame(columns=["setting", "seed", "difference"])
    )
    classes = (
        pd.concat(class_frames, ignore_index=True)
        if class_frames
        else pd.DataFrame(columns=["setting", "class", "queries", "difference"])
    )
    data = {
        "metric": column,
        "knob": results.knob,
        "baseline": baseline,
        "family": family,
        "mode": results.mode,
        "margin": margin,
        "sequential": design is not None,
        "comparisons": comparisons,
        "pairs": pairs,
        "classes": classes,
    }
    data["holm_family"] = holm_family(data)
    return data


def holm_family(data: dict[str, Any]) -> str:
    """The Holm family of a comparison (`comparison_data`) in words: its tested rows, what they
    are compared with, and the metric; each kind of p-value is corrected over it."""
    compared = data["comparisons"]
    tested = int((compared["test"] != stats.NO_TEST).sum()) if len(compared) else 0
    if is_contrasts(data["family"]):
        noun = "contrast" if tested == 1 else "contrasts"
        return f"the {tested} tested {noun} on {data['metric']}"
    noun = "method" if data["knob"] == "method" else "setting"
    return (
        f"the {tested} tested {noun}{'' if tested == 1 else 's'} compared with "
        f"{against_text(data)} on {data['metric']}"
    )


def against_text(data: dict[str, Any]) -> str:
    """What a baseline family is compared with: the method, or the knob's baseline value."""
    if data["knob"] == "method":
        return str(data["baseline"])
    return f"{data['knob']} = {data['baseline']}"


def row_label(setting: Any, against: Any, family: str, split: Any = None) -> str:
    """A comparison row's name in a table or figure: the setting, or for a contrast the
    setting minus the one it is compared with, and the class split it ran on, if any."""
    label = f"{setting} − {against}" if is_contrasts(family) else str(setting)
    if split is not None and not pd.isna(split):
        label += f" (split {split})"
    return label


def per_class_values(results: Results, usable: pd.DataFrame, column: str) -> pd.DataFrame | None:
    """The usable trials' per-class scores of `column` (``val_map_at_r`` reads the validation
    classes' ``map_at_r``): setting, seed, class, queries, value; None when the study kept no
    per-class scores of that metric."""
    split, _, metric = column.partition("_")
    classes = results.classes
    if classes is None or metric not in classes.columns or split not in ("val", "test"):
        return None
    own = classes[classes["split"] == split]
    joined = own.merge(usable[["trial_id", "setting", "seed"]], on="trial_id", how="inner")
    if joined.empty:
        return None
    return pd.DataFrame(
        {
            "setting": joined["setting"].astype(str),
            "seed": joined["seed"],
            "class": joined["class"].astype(str),
            "queries": joined["queries"].astype(float),
            "value": joined[metric].astype(float),
        }
    )


def equivalence_margin(results: Results) -> float:
    """The study's equivalence margin: --equivalence-margin, else an adaptive study's
    --precision, else 0 (no equivalence test)."""
    margin = results.study.get("equivalence_margin")
    if margin is None:
        margin = results.study.get("sequential", {}).get("precision", 0.0)
    return float(margin or 0.0)


def _class_means(
    class_values: pd.DataFrame, setting: str, baseline: str, seeds: pd.Series
) -> pd.DataFrame:
    """Each class's difference from the baseline, averaged over the paired seeds."""
    differences, queries = stats.class_differences(class_values, setting, baseline, seeds)
    return pd.DataFrame(
        {
            "setting": setting,
            "class": differences.columns.astype(str),
            "queries": queries.to_numpy(dtype=float),
            "difference": differences.mean(axis=0).to_numpy(dtype=float),
        }
    )


VERDICT_COLORS = {
    stats.BETTER: "#1a9850",
    stats.WORSE: "#d73027",
    stats.EQUIVALENT: "#4575b4",
    stats.SEEDS_ONLY: "#e08214",
    stats.PRECISE_ENOUGH: "#7f7f7f",
    stats.UNDECIDED: "#4d4d4d",
    stats.NO_VERDICT: "#b0b0b0",
}


def _row_keys(table: pd.DataFrame) -> list[tuple[Any, Any]]:
    """Each row's (setting, split): a setting names one row of a study, and one per split of a
    replication (`splits.replication_data`)."""
    splits = table["split"] if "split" in table.columns else [None] * len(table)
    return list(zip(table["setting"], splits, strict=True))


def _plot_labels(data: dict[str, Any]) -> dict[tuple[Any, Any], str]:
    """The y-axis label of every comparison row, keyed by `_row_keys`."""
    comparisons = data["comparisons"]
    return {
        key: plot_text(row_label(key[0], against, data["family"], key[1]))
        for key, against in zip(_row_keys(comparisons), comparisons["baseline"], strict=True)
    }


def _comparison_title(data: dict[str, Any], what: str) -> str:
    if is_contrasts(data["family"]):
        title = f"{what} from the method each is contrasted with"
    else:
        baseline = f"{plot_text(data['knob'])} = {plot_text(data['baseline'])}"
        title = f"{what} from the baseline {baseline}"
    if "split" in data["comparisons"].columns:
        title += ", on each class split"
    return title


def draw_comparison(data: dict[str, Any]) -> go.Figure:
    """A forest plot: each setting's mean paired difference from the setting it is compared
    with (the baseline, or a contrast's), with its 95% CI, the per-seed differences as faint
    points, and the Holm-adjusted p-value at the right."""
    comparisons, pairs = data["comparisons"], data["pairs"]
    figure = go.Figure()
    labels = _plot_labels(data)
    if not pairs.empty:
        figure.add_trace(
            go.Scatter(
                x=pairs["difference"],
                y=[labels[key] for key in _row_keys(pairs)],
                mode="markers",
                name="one seed",
                marker={"symbol": "circle-open", "size": 8, "color": "#9aa3ad"},
                hovertext=[
                    f"seed {number(row.seed)}: {number(row.difference)}"
                    for row in pairs.itertuples()
                ],
                hoverinfo="text",
            )
        )
    for word, color in VERDICT_COLORS.items():
        own = comparisons[
            [stats.verdict(row, data["mode"]) == word for row in comparisons.itertuples()]
        ]
        if own.empty:
            continue
        figure.add_trace(
            go.Scatter(
                x=own["mean_difference"],
                y=[labels[key] for key in _row_keys(own)],
                mode="markers",
                name=word,
                marker={"size": 12, "color": color, "symbol": "diamond"},
                error_x={
                    "type": "data",
                    "array": (own["ci_high"] - own["mean_difference"]).fillna(0),
                    "arrayminus": (own["mean_difference"] - own["ci_low"]).fillna(0),
                    "thickness": 2,
                    "width": 6,
                    "color": color,
                },
                hovertext=[_comparison_hover(row) for row in own.itertuples()],
                hoverinfo="text",
            )
        )
    over_classes = comparisons[np.isfinite(comparisons["class_ci_low"].astype(float))]
    if not over_classes.empty:
        figure.add_trace(
            go.Scatter(
                x=(over_classes["class_ci_low"] + over_classes["class_ci_high"]) / 2,
                y=[labels[key] for key in _row_keys(over_classes)],
                mode="markers",
                name=f"95% interval {stats.OVER_SEEDS_AND_CLASSES}",
                marker={"size": 1, "color": "#7b3294"},
                error_x={
                    "type": "data",
                    "array": (over_classes["class_ci_high"] - over_classes["class_ci_low"]) / 2,
                    "thickness": 1,
                    "width": 14,
                    "color": "#7b3294",
                },
                hoverinfo="skip",
            )
        )
    margin = data.get("margin", 0.0)
    if margin > 0:
        for edge in (-margin, margin):
            figure.add_vline(x=edge, line={"color": "#4575b4", "width": 1, "dash": "dot"})
    figure.add_vline(x=0, line={"color": "#444444", "width": 1, "dash": "dash"})
    for index, row in enumerate(comparisons.itertuples()):
        # On a category axis an annotation's position is the category's index; a label such
        # as "16" would otherwise be read as index 16.
        figure.add_annotation(
            x=1.01,
            xref="paper",
            y=index,
            yref="y",
            xanchor="left",
            showarrow=False,
            align="left",
            font={"size": 12, "color": VERDICT_COLORS[stats.verdict(row, data["mode"])]},
            text=_comparison_label(row),
        )
    figure.update_yaxes(
        type="category",
        categoryorder="array",
        categoryarray=list(labels.values()),
        autorange="reversed",
        title_text=plot_text(data["knob"]),
    )
    better = "higher is better" if data["mode"] == "max" else "lower is better"
    against = compared_with(data["family"])
    figure.update_xaxes(
        title_text=f"difference in {plot_text(data['metric'])} (setting − {against}; {better})",
        zeroline=False,
    )
    title = _comparison_title(data, "Difference") + ", paired by seed"
    figure = style(figure, title, 230 + 48 * max(len(comparisons), 1), legend_below=True)
    figure.update_layout(margin={"r": 330})
    return figure


def _comparison_label(row: Any) -> str:
    if row.test == stats.NO_TEST:
        return f"n = {row.n_pairs}: {stats.TOO_FEW_SEEDS}"
    if not math.isfinite(row.p_holm):
        return f"n = {row.n_pairs}: {plot_text(row.note)}"
    star = " *" if row.significant else ""
    test = "Wilcoxon" if row.test == stats.WILCOXON else "paired t"
    if row.test == stats.SEQUENTIAL_T:
        test = "sequential t"
    label = f"Holm p = {row.p_holm:.3g}{star} ({test}, n = {row.n_pairs})"
    if math.isfinite(row.class_p_holm):
        label += f"<br>over classes too: Holm p = {row.class_p_holm:.3g} ({row.classes} classes)"
    return label


def _comparison_hover(row: Any) -> str:
    text = (
        f"{plot_text(row.setting)} − {plot_text(row.baseline)}: {number(row.mean_difference)}"
        f"<br>{row.ci_confidence:.1%} interval {stats.OVER_SEEDS}: {number(row.ci_low)} to "
        f"{number(row.ci_high)}"
        f"<br>{plot_text(row.test)}: p = {number(row.p_value, 3)}, Holm p = {number(row.p_holm, 3)}"
    )
    if math.isfinite(row.class_ci_low):
        text += (
            f"<br>95% interval {stats.OVER_SEEDS_AND_CLASSES}: {number(row.class_ci_low)} to "
            f"{number(row.class_ci_high)}, Holm p = {number(row.class_p_holm, 3)}"
        )
    if row.equivalence_margin > 0:
        inside = "inside" if row.equivalent else "not inside"
        text += (
            f"<br>equivalence interval {number(row.equivalence_low)} to "
            f"{number(row.equivalence_high)}: {inside} ±{number(row.equivalence_margin)}"
        )
    return text + f"<br>Cohen's d_z = {number(row.effect_size_dz, 3)}, n = {row.n_pairs} pairs"


def draw_class_differences(data: dict[str, Any]) -> go.Figure:
    """Each class's difference from the baseline (mean over the seeds both ran), one point per
    class and setting, sized by its queries: whether a few classes carry an effect."""
    classes, comparisons = data["classes"], data["comparisons"]
    figure = go.Figure()
    labels = _plot_labels(data)
    figure.add_trace(
        go.Scatter(
            x=classes["difference"],
            y=[labels.get(key, plot_text(key[0])) for key in _row_keys(classes)],
            mode="markers",
            name="one class",
            marker={
                "size": 4 + 10 * np.sqrt(classes["queries"] / max(classes["queries"].max(), 1)),
                "color": "rgba(117, 112, 179, 0.45)",
                "line": {"width": 0},
            },
            hovertext=[
                f"{plot_text(setting)}, class {plot_text(name)}: {number(difference)} "
                f"({int(queries)} queries)"
                for setting, name, difference, queries in zip(
                    classes["setting"],
                    classes["class"],
                    classes["difference"],
                    classes["queries"],
                    strict=True,
                )
            ],
            hoverinfo="text",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=comparisons["mean_difference"],
            y=[labels[key] for key in _row_keys(comparisons)],
            mode="markers",
            name="mean over queries",
            marker={"size": 12, "color": "#222222", "symbol": "line-ns-open", "line": {"width": 3}},
            hoverinfo="skip",
        )
    )
    figure.add_vline(x=0, line={"color": "#444444", "width": 1, "dash": "dash"})
    figure.update_yaxes(
        type="category",
        categoryorder="array",
        categoryarray=list(labels.values()),
        autorange="reversed",
        title_text=plot_text(data["knob"]),
    )
    against = compared_with(data["family"])
    figure.update_xaxes(
        title_text=f"difference in {plot_text(data['metric'])} per class (setting − {against})",
        zeroline=False,
    )
    title = "Per class: " + _comparison_title(data, "the difference")
    return style(figure, title, 170 + 48 * max(len(comparisons), 1))


def class_concentration(data: dict[str, Any], top: int = 3) -> pd.DataFrame:
    """Per setting: the `top` classes that move its mean most (by query-weighted absolute
    difference), and the share of all classes' absolute movement they carry, beside the share
    they would carry if every class moved alike (`top` / classes)."""
    rows = []
    for setting, own in data["classes"].groupby("setting", sort=False):
        movement = (own["difference"] * own["queries"]).abs()
        total = float(movement.sum())
        if total == 0 or not math.isfinite(total):
            continue
        largest = movement.sort_values(ascending=False).head(top)
        rows.append(
            {
                "setting": setting,
                "classes": len(own),
                f"top {top} classes": ", ".join(
                    f"{name} ({number(value)})"
                    for name, value in zip(
                        own.loc[largest.index, "class"],
                        own.loc[largest.index, "difference"],
                        strict=True,
                    )
                ),
                "their share of the movement": float(largest.sum() / total),
                "share if every class moved alike": min(top, len(own)) / len(own),
            }
        )
    return pd.DataFrame(rows)


# (3) Validation and test side by side.


def validation_test_data(results: Results) -> pd.DataFrame:
    """Each setting's mean and 95% CI on validation and on test (unseen classes).

    Returns:
        Columns split ("validation" or "test"), then `stats.SUMMARY_COLUMNS`; test rows only
        when trials.csv has the test metric. Test values come from the usable trials that have
        one (trials stopped early have none).
    """
    settings = setting_order(results)
    frames = []
    for split, column in (("validation", results.metric), ("test", results.test_metric)):
        if column is None:
            continue
        usable = usable_trials(results, column)
        values = pd.DataFrame(
            {"setting": usable["setting"].astype(str), "value": usable[column].astype(float)}
        )
        frames.append(stats.summarize_settings(values, settings).assign(split=split))
    table = pd.concat(frames, ignore_index=True)
    return table[["split", *stats.SUMMARY_COLUMNS]]


def draw_validation_test(
    data: pd.DataFrame, metric: str, knob: str, reference: dict[str, float] | None = None
) -> go.Figure:
    """Validation and test means with 95% CIs, grouped per setting, and the pretrained
    reference's validation and test values (`reference.reference_data`) as dashed lines."""
    figure = go.Figure()
    settings = list(dict.fromkeys(data["setting"]))
    colors = {"validation": "#1f4e79", "test": "#e08a1e"}
    for split in ("validation", "test"):
        own = data[(data["split"] == split) & (data["n"] > 0)]
        if own.empty:
            continue
        figure.add_trace(
            go.Scatter(
                x=[plot_text(setting) for setting in own["setting"]],
                y=own["mean"],
                mode="markers",
                name=f"{split} (mean ± 95% CI)",
                marker={"size": 11, "color": colors[split]},
                error_y={
                    "type": "data",
                    "array": (own["ci_high"] - own["mean"]).fillna(0),
                    "arrayminus": (own["mean"] - own["ci_low"]).fillna(0),
                    "thickness": 1.5,
                    "width": 5,
                    "color": colors[split],
                },
                hovertext=[
                    f"{split}, {plot_text(knob)} = {plot_text(row.setting)}"
                    f"<br>mean {number(row.mean)}"
                    f"<br>95% CI {number(row.ci_low)} to {number(row.ci_high)}<br>n = {row.n}"
                    for row in own.itertuples()
                ],
                hoverinfo="text",
            )
        )
    if reference is not None:
        for split in ("validation", "test"):
            name = f"{REFERENCE_LABEL} ({split})"
            add_reference_line(figure, reference[split], name, colors[split])
    figure.update_layout(scattermode="group", scattergap=0.6)
    _setting_axis(figure, settings, "category", plot_text(knob))
    base = metric.removeprefix("val_")
    figure.update_yaxes(title_text=plot_text(base))
    title = f"Validation (seen-class split) and test (unseen classes): {plot_text(base)}"
    return style(figure, title, 420, legend_below=True)


# (4) Learning curves.


def learning_curve_data(results: Results, columns: Sequence[str] | None = None) -> dict[str, Any]:
    """Per-setting learning curves over the usable trials: mean and range over seeds per epoch.

    Args:
        results: The study.
        columns: epochs.csv columns to draw; the validation metric and `train_loss` by default
            (those present).

    Returns:
        ``curves``: column, setting, epoch, n, mean, low, high (low and high are the smallest
        and largest seed); ``stops``: trial_id, setting, seed, epoch, column, value of the last
        epoch of every trial stopped early; ``columns``, ``knob`` and ``settings``.
    """
    if columns is None:
        columns = [results.metric, "train_loss"]
    columns = [column for column in columns if column in results.epochs.columns]
    usable = usable_trials(results)[["trial_id", "setting", "seed", "status"]]
    epochs = results.epochs.merge(usable, on="trial_id", how="inner")
    settings = setting_order(results)
    curve_rows, stop_rows = [], []
    for column in columns:
        finite = epochs[np.isfinite(epochs[column].astype(float))]
        grouped = finite.groupby(["setting", "epoch"])[column]
        table = grouped.agg(n="count", mean="mean", low="min", high="max").reset_index()
        table.insert(0, "column", column)
        table["order"] = table["setting"].map({s: i for i, s in enumerate(settings)})
        curve_rows.append(table.sort_values(["order", "epoch"]).drop(columns="order"))
        stopped = finite[finite["status"] == "stopped_early"]
        last = (
            stopped.loc[stopped.groupby("trial_id")["epoch"].idxmax()] if len(stopped) else stopped
        )
        stop_rows.append(
            pd.DataFrame(
                {
                    "trial_id": last["trial_id"],
                    "setting": last["setting"],
                    "seed": last["seed"],
                    "epoch": last["epoch"],
                    "column": column,
                    "value": last[column],
                }
            )
        )
    curve_columns = ["column", "setting", "epoch", "n", "mean", "low", "high"]
    stop_columns = ["trial_id", "setting", "seed", "epoch", "column", "value"]
    return {
        "curves": pd.concat(curve_rows, ignore_index=True)
        if curve_rows
        else pd.DataFrame(columns=curve_columns),
        "stops": pd.concat(stop_rows, ignore_index=True)
        if stop_rows
        else pd.DataFrame(columns=stop_columns),
        "columns": list(columns),
        "knob": results.knob,
        "settings": settings,
    }


def draw_learning_curves(data: dict[str, Any], still_improving: Sequence[str] = ()) -> go.Figure:
    """One panel per column: a line per setting (mean over seeds), a band from the lowest to the
    highest seed, and a cross where a trial was stopped early; the settings in `still_improving`
    (`convergence.flagged_settings`) say so in the legend."""
    columns = data["columns"]
    figure = make_subplots(
        rows=1,
        cols=max(len(columns), 1),
        subplot_titles=[plot_text(column) for column in columns],
        horizontal_spacing=0.1,
    )
    curves, stops = data["curves"], data["stops"]
    for panel, column in enumerate(columns, start=1):
        for index, setting in enumerate(data["settings"]):
            own = curves[(curves["column"] == column) & (curves["setting"] == setting)]
            if own.empty:
                continue
            color = PALETTE[index % len(PALETTE)]
            label = f"{plot_text(data['knob'])} = {plot_text(setting)}"
            if setting in still_improving:
                label += STILL_IMPROVING_MARK
            figure.add_trace(
                go.Scatter(
                    x=list(own["epoch"]) + list(own["epoch"])[::-1],
                    y=list(own["high"]) + list(own["low"])[::-1],
                    fill="toself",
                    fillcolor=rgba(color, 0.12),
                    line={"width": 0},
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=label,
                ),
                row=1,
                col=panel,
            )
            figure.add_trace(
                go.Scatter(
                    x=own["epoch"],
                    y=own["mean"],
                    mode="lines+markers",
                    name=label,
                    legendgroup=label,
                    showlegend=panel == 1,
                    line={"color": color, "width": 2},
                    marker={"size": 5},
                    hovertext=[
                        f"{label}, epoch {int(row.epoch)}<br>mean {number(row.mean)} "
                        f"(range {number(row.low)} to {number(row.high)}, n = {row.n})"
                        for row in own.itertuples()
                    ],
                    hoverinfo="text",
                ),
                row=1,
                col=panel,
            )
            stopped = stops[(stops["column"] == column) & (stops["setting"] == setting)]
            if not stopped.empty:
                figure.add_trace(
                    go.Scatter(
                        x=stopped["epoch"],
                        y=stopped["value"],
                        mode="markers",
                        name="stopped early",
                        legendgroup=label,
                        showlegend=False,
                        marker={"symbol": "x", "size": 11, "color": color},
                        hovertext=[
                            f"trial {plot_text(row.trial_id)} ({label}, seed {number(row.seed)})"
                            f"<br>stopped early after epoch {int(row.epoch)}"
                            for row in stopped.itertuples()
                        ],
                        hoverinfo="text",
                    ),
                    row=1,
                    col=panel,
                )
        figure.update_xaxes(title_text="epoch", row=1, col=panel)
    title = "Learning curves (line: mean over seeds; band: range; ×: stopped early)"
    return style(figure, title, 480, legend_below=True)


# (5) Cost.


def cost_data(results: Results) -> dict[str, Any]:
    """Wall time and GPU time per trial, per setting (ablation, compare) and for the study.

    Returns:
        ``trials``: number, trial_id, setting, status, time_total_s, gpus, gpu_time_s;
        ``settings``: setting, trials, time_total_s, gpu_time_s (sums; empty for a search);
        ``totals``: trials, trial_time_s, gpu_time_s, mean_trial_time_s and wall_time_s (from
        environment.json's start and end time; NaN when unknown).
    """
    trials = results.trials
    table = pd.DataFrame(
        {
            "number": trials["number"],
            "trial_id": trials["trial_id"].astype(str),
            "setting": trials["setting"].astype(str),
            "status": trials["status"],
            "time_total_s": trials["time_total_s"].astype(float),
            "gpus": trials["gpus"].astype(float),
            "gpu_time_s": trials["gpu_time_s"].astype(float),
        }
    )
    settings = pd.DataFrame(columns=["setting", "trials", "time_total_s", "gpu_time_s"])
    if results.is_ablation:
        order = setting_order(results)
        settings = (
            table.groupby("setting")
            .agg(
                trials=("trial_id", "count"),
                time_total_s=("time_total_s", "sum"),
                gpu_time_s=("gpu_time_s", "sum"),
            )
            .reindex(order)
            .rename_axis("setting")
            .reset_index()
        )
    totals = {
        "trials": len(table),
        "trial_time_s": float(table["time_total_s"].sum()),
        "gpu_time_s": float(table["gpu_time_s"].sum()),
        "mean_trial_time_s": float(table["time_total_s"].mean()) if len(table) else math.nan,
        "wall_time_s": study_wall_time(results.environment),
    }
    return {"trials": table, "settings": settings, "totals": totals, "knob": results.knob}


def quality_cost_data(results: Results) -> pd.DataFrame:
    """Each setting's (or, in a search, each trial's) mean validation metric against its mean
    cost (`cost_objective`), and whether no other point is both better and cheaper: in a
    multi-objective search, the trials on the Pareto front.

    Columns: label, metric, cost, trials, non_dominated. Empty when trials.csv lacks the cost
    (studies older than the column).
    """
    columns = ["label", "metric", "cost", "trials", "non_dominated"]
    cost_column = cost_objective(results)
    usable = usable_trials(results)
    if cost_column not in usable.columns:
        return pd.DataFrame(columns=columns)
    usable = usable[np.isfinite(usable[cost_column].astype(float))]
    if results.is_ablation:
        table = (
            usable.groupby(usable["setting"].astype(str))
            .agg(
                metric=(results.metric, "mean"),
                cost=(cost_column, "mean"),
                trials=("trial_id", "count"),
            )
            .reindex([s for s in setting_order(results) if s in set(usable["setting"].astype(str))])
            .rename_axis("label")
            .reset_index()
        )
    else:
        table = pd.DataFrame(
            {
                "label": "trial " + usable["number"].astype(int).astype(str),
                "metric": usable[results.metric].astype(float),
                "cost": usable[cost_column].astype(float),
                "trials": 1,
            }
        )
    sign = 1.0 if results.mode == "max" else -1.0
    quality = sign * table["metric"].to_numpy(dtype=float)
    cost = table["cost"].to_numpy(dtype=float)
    table["non_dominated"] = [
        not np.any(
            (quality >= quality[i])
            & (cost <= cost[i])
            & ((quality > quality[i]) | (cost < cost[i]))
        )
        for i in range(len(table))
    ]
    return table[columns]


def cost_objective(results: Results) -> str:
    """The cost a study trades its metric against: a multi-objective search's second objective,
    else the time per training step."""
    objectives = results.study.get("objectives") or []
    return str(objectives[1]) if len(objectives) > 1 else "time_per_step_s"


COST_AXES = {
    "time_per_step_s": ("time per training step (ms)", 1000.0),
    "time_per_epoch_s": ("time per epoch (s)", 1.0),
    "peak_gpu_memory_mb": ("peak GPU memory (MiB)", 1.0),
}


def draw_quality_cost(data: pd.DataFrame, metric: str, knob: str, cost: str) -> go.Figure:
    """The metric against the cost; non-dominated points as stars on their front."""
    title, scale = COST_AXES.get(cost, (cost, 1.0))
    figure = go.Figure()
    front = data[data["non_dominated"]].sort_values("cost")
    figure.add_trace(
        go.Scatter(
            x=front["cost"] * scale,
            y=front["metric"],
            mode="lines",
            line={"color": "#bbbbbb", "dash": "dot"},
            name="non-dominated front",
            hoverinfo="skip",
        )
    )
    for dominated, marker in ((False, "star"), (True, "circle")):
        own = data[data["non_dominated"] != dominated]
        figure.add_trace(
            go.Scatter(
                x=own["cost"] * scale,
                y=own["metric"],
                mode="markers+text",
                text=[plot_text(label) for label in own["label"]],
                textposition="top center",
                marker={"symbol": marker, "size": 12 if not dominated else 8},
                name="dominated" if dominated else "non-dominated (no other is better and cheaper)",
            )
        )
    figure.update_xaxes(title_text=title)
    figure.update_yaxes(title_text=plot_text(metric))
    return style(figure, f"{plot_text(metric)} against cost, by {plot_text(knob)}", 420)


def study_wall_time(environment: dict[str, Any]) -> float:
    """The study's wall time in seconds from environment.json, else NaN.

    `study_wall_s` when present, otherwise from the start to the end time (ISO 8601 or Unix
    seconds; `started`/`finished`, `start_time`/`end_time` and similar names).
    """
    recorded = environment.get("study_wall_s")
    if isinstance(recorded, int | float) and math.isfinite(recorded):
        return float(recorded)
    start = _first(environment, ("started", "start_time", "started_at", "start"))
    end = _first(environment, ("finished", "end_time", "finished_at", "ended", "ended_at", "end"))
    if start is None or end is None:
        return math.nan
    try:
        if isinstance(start, int | float) and isinstance(end, int | float):
            return float(end) - float(start)
        return float((pd.Timestamp(end) - pd.Timestamp(start)).total_seconds())
    except (TypeError, ValueError):
        return math.nan


def _first(mapping: dict[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        if mapping.get(key) not in (None, ""):
            return mapping[key]
    return None


def draw_cost(data: dict[str, Any]) -> go.Figure:
    """Minutes per trial coloured by status and, for an ablation, hours per setting."""
    settings = data["settings"]
    panels = 2 if len(settings) else 1
    titles = ["time per trial (minutes)"]
    if panels == 2:
        titles.append("total per setting (hours)")
    figure = make_subplots(rows=1, cols=panels, subplot_titles=titles, horizontal_spacing=0.1)
    trials = data["trials"]
    for status, color in STATUS_COLORS.items():
        own = trials[trials["status"] == status]
        if own.empty:
            continue
        figure.add_trace(
            go.Bar(
                x=own["number"],
                y=own["time_total_s"] / 60,
                name=STATUS_WORDS[status],
                marker={"color": color},
                hovertext=[
                    f"trial {plot_text(row.trial_id)} (#{number(row.number)})"
                    + (f"<br>setting {plot_text(row.setting)}" if row.setting else "")
                    + f"<br>{number(row.time_total_s / 60, 3)} min, "
                    f"{number(row.gpus, 3)} GPU"
                    for row in own.itertuples()
                ],
                hoverinfo="text",
            ),
            row=1,
            col=1,
        )
    figure.update_xaxes(title_text="trial number", row=1, col=1)
    if panels == 2:
        labels = [plot_text(setting) for setting in settings["setting"]]
        for column, name, color in (
            ("time_total_s", "trial time", "#8da0cb"),
            ("gpu_time_s", "GPU time", "#66a61e"),
        ):
            figure.add_trace(
                go.Bar(x=labels, y=settings[column] / 3600, name=name, marker={"color": color}),
                row=1,
                col=2,
            )
        figure.update_xaxes(type="category", title_text=plot_text(data["knob"]), row=1, col=2)
    figure.update_layout(barmode="group")
    return style(figure, "Cost", 430, legend_below=True)


# Search studies.


def history_data(results: Results) -> pd.DataFrame:
    """The optimisation history: every trial's validation metric and the best so far.

    Returns:
        number, trial_id, status, value, best_so_far; the best so far runs over completed
        trials only (as Optuna's), NaN before the first one.
    """
    trials = results.trials
    values = trials[results.metric].astype(float)
    counted = np.where((trials["status"] == "completed") & np.isfinite(values), values, np.nan)
    series = pd.Series(counted)
    best = series.cummax() if results.mode == "max" else series.cummin()
    return pd.DataFrame(
        {
            "number": trials["number"].to_numpy(),
            "trial_id": trials["trial_id"].astype(str).to_numpy(),
            "status": trials["status"].to_numpy(),
            "value": values.to_numpy(),
            "best_so_far": best.ffill().to_numpy(),
        }
    )


def draw_history(data: pd.DataFrame, metric: str, reference: float | None = None) -> go.Figure:
    """Trials as points by status, the best-so-far line and the pretrained reference's
    validation value (dashed; None leaves it out)."""
    figure = go.Figure()
    for status in ("completed", "stopped_early"):
        own = data[(data["status"] == status) & np.isfinite(data["value"])]
        if own.empty:
            continue
        figure.add_trace(
            go.Scatter(
                x=own["number"],
                y=own["value"],
                mode="markers",
                name=STATUS_WORDS[status]
                + (" (value at the stop)" if status == "stopped_early" else ""),
                marker={
                    "color": STATUS_COLORS[status],
                    "size": 8,
                    "symbol": "circle" if status == "completed" else "x",
                },
                hovertext=[
                    f"trial {plot_text(row.trial_id)} (#{number(row.number)})"
                    f"<br>{number(row.value)}"
                    for row in own.itertuples()
                ],
                hoverinfo="text",
            )
        )
    figure.add_trace(
        go.Scatter(
            x=data["number"],
            y=data["best_so_far"],
            mode="lines",
            name="best so far",
            line={"color": "#c8414b", "width": 2, "shape": "hv"},
            hoverinfo="skip",
        )
    )
    add_reference_line(figure, reference)
    figure.update_xaxes(title_text="trial number")
    figure.update_yaxes(title_text=plot_text(metric))
    return style(figure, f"Optimisation history of {plot_text(metric)}", 420)


def importance_data(importances: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Importances as a long table: param, evaluator, importance.

    Rows follow the first evaluator's ranking, most important first, then evaluator order.
    """
    evaluators = list(importances)
    if not evaluators:
        return pd.DataFrame(columns=["param", "evaluator", "importance"])
    primary = importances[evaluators[0]]
    params = sorted(primary, key=lambda param: -primary[param])
    params += [p for name in evaluators for p in importances[name] if p not in params]
    rows = [
        (param, name, float(importances[name].get(param, math.nan)))
        for param in params
        for name in evaluators
    ]
    return pd.DataFrame(rows, columns=["param", "evaluator", "importance"])


def draw_importances(data: pd.DataFrame, metric: str) -> go.Figure:
    """Horizontal bars per evaluator, the most important parameter on top."""
    figure = go.Figure()
    colors = ["#2a7ab0", "#9aa3ad"]
    evaluators = list(dict.fromkeys(data["evaluator"]))
    for index, name in enumerate(evaluators):
        own = data[data["evaluator"] == name]
        figure.add_trace(
            go.Bar(
                x=own["importance"],
                y=[plot_text(param) for param in own["param"]],
                orientation="h",
                name=plot_text(name),
                marker={"color": colors[index % len(colors)]},
                text=[f"{value:.2f}" for value in own["importance"]],
                textposition="outside",
                cliponaxis=False,
                hoverinfo="skip",
            )
        )
    figure.update_layout(barmode="group")
    figure.update_yaxes(autorange="reversed")
    figure.update_xaxes(title_text="importance (each evaluator sums to 1)")
    params = data["param"].nunique()
    title = f"Parameter importances for {plot_text(metric)}"
    return style(figure, title, 150 + 30 * max(params, 1) * max(len(evaluators), 1))


def optuna_figures(
    study: optuna.Study, metric: str, top_params: Sequence[str]
) -> list[tuple[str, go.Figure]]:
    """Optuna's own figures of a study whose names are already escaped (see `escaped_study`).

    Returns:
        (name, figure) for the parallel coordinate plot, the slice plot of `top_params` and the
        intermediate values (the per-epoch curves the scheduler saw); a figure Optuna cannot
        draw is left out.
    """
    from optuna import visualization

    target = plot_text(metric)
    makers = [
        (
            "parallel coordinate",
            lambda: visualization.plot_parallel_coordinate(study, target_name=target),
        ),
        (
            "slice",
            lambda: visualization.plot_slice(study, params=list(top_params), target_name=target),
        ),
        ("intermediate values", lambda: visualization.plot_intermediate_values(study)),
    ]
    figures = []
    with quiet_optuna():
        for name, make in makers:
            try:
                figure = make()
            except (ValueError, KeyError, IndexError):
                continue
            if not figure.data:
                continue
            if name == "intermediate values":
                figure.update_xaxes(title_text="epoch")
                figure.update_yaxes(title_text=target)
            title = figure.layout.title.text or name
            figures.append((name, style(figure, plot_text(title), 440)))
    return figures
