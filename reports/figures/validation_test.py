"""Validation and test side by side: each setting's mean and 95% CI on the validation classes
and on the unseen test classes.
"""

from __future__ import annotations

import pandas as pd

from reports import stats
from reports.figures._common import (
    REFERENCE_LABEL,
    _setting_axis,
    add_reference_line,
    go,
    interval_bars,
    number,
    style,
)
from reports.load import Results, setting_order, usable_trials
from reports.page import plot_text


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
                error_y=interval_bars(
                    own["mean"],
                    own["ci_low"],
                    own["ci_high"],
                    thickness=1.5,
                    width=5,
                    color=colors[split],
                ),
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
