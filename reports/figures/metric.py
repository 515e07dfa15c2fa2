"""The metric against the knob: every seed, and each setting's mean with its 95% CI."""

from __future__ import annotations

from typing import Any

import pandas as pd

from gapan.results import setting_values
from reports import stats
from reports.figures._common import (
    STATUS_SYMBOLS,
    STATUS_WORDS,
    _setting_axis,
    add_reference_line,
    axis_kind,
    go,
    interval_bars,
    number,
    setting_positions,
    style,
)
from reports.load import Results, baseline_setting, setting_order, usable_trials
from reports.page import plot_text
from reports.reference import reference_data


def metric_by_setting_data(results: Results) -> dict[str, Any]:
    """Every usable trial's validation metric per setting, and each setting's mean and 95% CI.

    Returns:
        ``points``: trial_id, setting, seed, status, value, one row per usable trial;
        ``summary``: `stats.SUMMARY_COLUMNS` per setting in report order; ``axis``: "log",
        "linear" or "category"; ``positions``: where each setting sits on it
        (`setting_positions`); ``metric``, ``knob``, ``baseline`` (None when study.json's
        baseline names no setting), ``settings`` (the order) and ``reference`` (the pretrained
        backbone's validation value, None without reference.json).
    """
    settings = setting_order(results)
    values = setting_values(results.trials)
    ordered = [values[setting] for setting in settings]
    axis = axis_kind(ordered)
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
        "axis": axis,
        "positions": setting_positions(settings, ordered, axis),
        "points": points,
        "summary": stats.summarize_settings(points, settings),
        "reference": None if reference is None else reference["validation"],
    }


def draw_metric_by_setting(data: dict[str, Any]) -> go.Figure:
    """Seeds as faint points, the mean as a line with 95% CI error bars, the baseline and the
    pretrained reference dashed."""
    figure = go.Figure()
    positions = dict(zip(data["settings"], data["positions"], strict=True))
    for status in ("completed", "stopped_early"):
        own = data["points"][data["points"]["status"] == status]
        if not own.empty:
            figure.add_trace(_seeds(own, status, positions))
    summary = data["summary"]
    shown = summary[summary["n"] > 0]
    figure.add_trace(_means(shown, positions, data["knob"]))
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
    knob = plot_text(data["knob"])
    _setting_axis(figure, data["settings"], data["axis"], knob, data["positions"])
    figure.update_yaxes(title_text=plot_text(data["metric"]))
    title = f"{plot_text(data['metric'])} against {knob}"
    return style(figure, title, 440, legend_below=True)


def _seeds(own: pd.DataFrame, status: str, positions: dict[str, Any]) -> go.Scatter:
    """The seeds of one status, each a faint point."""
    return go.Scatter(
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


def _means(shown: pd.DataFrame, positions: dict[str, Any], knob: str) -> go.Scatter:
    """Each setting's mean, joined by a line, with its 95% CI as error bars."""
    return go.Scatter(
        x=[positions[setting] for setting in shown["setting"]],
        y=shown["mean"],
        mode="lines+markers",
        name="mean ± 95% CI",
        line={"color": "#1f4e79", "width": 2},
        marker={"size": 9, "color": "#1f4e79"},
        error_y=interval_bars(
            shown["mean"], shown["ci_low"], shown["ci_high"], thickness=1.5, width=6
        ),
        hovertext=[
            f"{plot_text(knob)} = {plot_text(row.setting)}<br>mean {number(row.mean)}"
            f"<br>95% CI {number(row.ci_low)} to {number(row.ci_high)}<br>n = {row.n}"
            for row in shown.itertuples()
        ],
        hoverinfo="text",
    )
