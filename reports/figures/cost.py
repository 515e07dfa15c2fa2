"""Cost: wall and GPU time per trial, per setting and for the whole study."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from reports.figures._common import STATUS_COLORS, STATUS_WORDS, go, make_subplots, number, style
from reports.load import Results, setting_order
from reports.page import plot_text


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
