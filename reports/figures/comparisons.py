"""Each setting against the baseline, or each contrast against its method, paired by seed:
the Holm families, their data (`comparison_data`), the words that name them, and the forest plot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gapan.results import setting_values
from gapan.sequential import Design
from reports import stats
from reports.figures._common import go, interval_bars, number, style
from reports.load import Results, baseline_setting, same_setting, setting_order, usable_trials
from reports.page import plot_text

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
    values = setting_values(results.trials)
    found = []
    for setting in settings:
        for named, against in (results.study.get("contrasts") or {}).items():
            if not same_setting(values[setting], named):
                continue
            match = [other for other in settings if same_setting(values[other], against)]
            if match and match[0] != setting:
                found.append((setting, match[0]))
            break
    return found


def missing_contrasts(results: Results) -> list[str]:
    """The contrasts of study.json that `contrast_pairs` leaves out, as "setting − against"."""
    kept = {(setting, against) for setting, against in contrast_pairs(results)}
    values = setting_values(results.trials)
    return [
        f"{named} − {against}"
        for named, against in (results.study.get("contrasts") or {}).items()
        if not any(
            same_setting(values[setting], named) and same_setting(values[other], against)
            for setting, other in kept
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
    planned = _plan(results, column, family)
    usable = usable_trials(results, column)
    values = pd.DataFrame(
        {
            "setting": usable["setting"].astype(str),
            "seed": usable["seed"],
            "value": usable[column].astype(float),
        }
    )
    class_values = per_class_values(results, usable, column)
    stops = (results.sequential or {}).get("settings", {})
    paired = _paired(planned, values, class_values, stops)
    data = {
        "metric": column,
        "knob": results.knob,
        "baseline": planned.baseline,
        "family": family,
        "mode": results.mode,
        "margin": planned.margin,
        "sequential": planned.design is not None,
        "comparisons": paired.comparisons,
        "pairs": paired.pairs,
        "classes": paired.classes,
    }
    data["holm_family"] = holm_family(data)
    return data


@dataclass(frozen=True)
class _Plan:
    """What a Holm family compares, before any number: each (setting, the setting it is
    compared with) in report order, the baseline (None for the contrasts, or where study.json's
    names no setting), every setting in report order, the sequential design of an adaptive
    study's own metric and family (None: fixed-sample tests) and the equivalence margin."""

    compared: list[tuple[str, str]]
    baseline: str | None
    settings: list[str]
    design: Design | None
    margin: float


def _plan(results: Results, column: str, family: str) -> _Plan:
    """What `family` compares in `results` on `column`."""
    baseline = baseline_setting(results) if family == stats.BASELINE_FAMILY else None
    settings = setting_order(results)
    if is_contrasts(family):
        compared = contrast_pairs(results)
    elif baseline is not None:
        compared = [(setting, baseline) for setting in settings if setting != baseline]
    else:
        compared = []
    adaptive = "sequential" in results.study and column == results.metric
    adaptive = adaptive and family == stats.BASELINE_FAMILY
    design = Design(**results.study["sequential"]) if adaptive else None
    return _Plan(compared, baseline, settings, design, equivalence_margin(results))


@dataclass(frozen=True)
class _Paired:
    """A Holm family's comparisons (`stats.COMPARISON_COLUMNS` and `stats.CLASS_COLUMNS`), the
    differences of their paired seeds (setting, seed, difference), and each class's mean
    difference over those seeds (setting, class, queries, difference)."""

    comparisons: pd.DataFrame
    pairs: pd.DataFrame
    classes: pd.DataFrame


def _paired(
    plan: _Plan,
    values: pd.DataFrame,
    class_values: pd.DataFrame | None,
    stops: dict[str, Any],
) -> _Paired:
    """The comparisons of `plan` on `values` (setting, seed, value), over seeds and, with
    `class_values`, over classes; `stops`: an adaptive study's decisions (sequential.json)."""
    pairs = pd.DataFrame(columns=["setting", "seed", "difference"])
    classes = pd.DataFrame(columns=["setting", "class", "queries", "difference"])
    if not plan.compared:
        comparisons = pd.DataFrame(columns=stats.COMPARISON_COLUMNS + stats.CLASS_COLUMNS)
        return _Paired(comparisons, pairs, classes)
    comparisons = (
        stats.sequential_comparisons(values, plan.baseline, plan.settings, plan.design)
        if plan.design is not None
        else stats.compare_pairs(values, plan.compared)
    )
    seed_pairs, pair_frames, class_frames = {}, [], []
    for setting, against in plan.compared:
        own = stats.paired_differences(values, setting, against)
        seed_pairs[setting] = own
        pair_frames.append(own.assign(setting=setting)[["setting", "seed", "difference"]])
        if class_values is not None:
            class_frames.append(_class_means(class_values, setting, against, own["seed"]))
    comparisons = stats.with_class_intervals(
        comparisons, seed_pairs, class_values, plan.margin, design=plan.design
    )
    if plan.design is not None:
        # Why each comparison took no more seeds: a precision stop is not a decision.
        comparisons["stopped_for"] = [
            stops.get(str(setting), {}).get("decision", "") for setting in comparisons["setting"]
        ]
    if pair_frames:
        pairs = pd.concat(pair_frames, ignore_index=True)
    if class_frames:
        classes = pd.concat(class_frames, ignore_index=True)
    return _Paired(comparisons, pairs, classes)


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
        figure.add_trace(_seed_differences(pairs, labels))
    for word, color in VERDICT_COLORS.items():
        own = comparisons[
            [stats.verdict(row, data["mode"]) == word for row in comparisons.itertuples()]
        ]
        if not own.empty:
            figure.add_trace(_mean_differences(own, labels, word, color))
    over_classes = comparisons[np.isfinite(comparisons["class_ci_low"].astype(float))]
    if not over_classes.empty:
        figure.add_trace(_class_intervals(over_classes, labels))
    margin = data.get("margin", 0.0)
    if margin > 0:
        for edge in (-margin, margin):
            figure.add_vline(x=edge, line={"color": "#4575b4", "width": 1, "dash": "dot"})
    figure.add_vline(x=0, line={"color": "#444444", "width": 1, "dash": "dash"})
    _annotate_tests(figure, comparisons, data["mode"])
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


def _seed_differences(pairs: pd.DataFrame, labels: dict[tuple[Any, Any], str]) -> go.Scatter:
    """Each paired seed's difference, a faint point on its comparison's row."""
    return go.Scatter(
        x=pairs["difference"],
        y=[labels[key] for key in _row_keys(pairs)],
        mode="markers",
        name="one seed",
        marker={"symbol": "circle-open", "size": 8, "color": "#9aa3ad"},
        hovertext=[
            f"seed {number(row.seed)}: {number(row.difference)}" for row in pairs.itertuples()
        ],
        hoverinfo="text",
    )


def _mean_differences(
    own: pd.DataFrame, labels: dict[tuple[Any, Any], str], word: str, color: str
) -> go.Scatter:
    """The comparisons of one verdict (`word`): each mean difference with its interval."""
    return go.Scatter(
        x=own["mean_difference"],
        y=[labels[key] for key in _row_keys(own)],
        mode="markers",
        name=word,
        marker={"size": 12, "color": color, "symbol": "diamond"},
        error_x=interval_bars(
            own["mean_difference"], own["ci_low"], own["ci_high"], thickness=2, width=6, color=color
        ),
        hovertext=[_comparison_hover(row) for row in own.itertuples()],
        hoverinfo="text",
    )


def _class_intervals(over_classes: pd.DataFrame, labels: dict[tuple[Any, Any], str]) -> go.Scatter:
    """Each comparison's interval over seeds and classes, drawn as an error bar alone."""
    return go.Scatter(
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


def _annotate_tests(figure: go.Figure, comparisons: pd.DataFrame, mode: str) -> None:
    """Each row's test and Holm-adjusted p-value at the right, in its verdict's colour."""
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
            font={"size": 12, "color": VERDICT_COLORS[stats.verdict(row, mode)]},
            text=_comparison_label(row),
        )


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
