"""Learning curves: the mean over seeds per epoch, the range of the seeds, and where trials
were stopped early.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from reports.figures._common import PALETTE, go, make_subplots, number, rgba, style
from reports.load import Results, setting_order, usable_trials
from reports.page import plot_text

STILL_IMPROVING_MARK = " (still improving)"


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
            where = {"row": 1, "col": panel}
            figure.add_trace(_range_band(own, color, label), **where)
            figure.add_trace(_mean_curve(own, color, label, first_panel=panel == 1), **where)
            stopped = stops[(stops["column"] == column) & (stops["setting"] == setting)]
            if not stopped.empty:
                figure.add_trace(_stopped_early(stopped, color, label), **where)
        figure.update_xaxes(title_text="epoch", row=1, col=panel)
    title = "Learning curves (line: mean over seeds; band: range; ×: stopped early)"
    return style(figure, title, 480, legend_below=True)


def _range_band(own: pd.DataFrame, color: str, label: str) -> go.Scatter:
    """A setting's band from its lowest to its highest seed at each epoch."""
    return go.Scatter(
        x=list(own["epoch"]) + list(own["epoch"])[::-1],
        y=list(own["high"]) + list(own["low"])[::-1],
        fill="toself",
        fillcolor=rgba(color, 0.12),
        line={"width": 0},
        hoverinfo="skip",
        showlegend=False,
        legendgroup=label,
    )


def _mean_curve(own: pd.DataFrame, color: str, label: str, first_panel: bool) -> go.Scatter:
    """A setting's mean over seeds at each epoch; in the legend once, from the first panel."""
    return go.Scatter(
        x=own["epoch"],
        y=own["mean"],
        mode="lines+markers",
        name=label,
        legendgroup=label,
        showlegend=first_panel,
        line={"color": color, "width": 2},
        marker={"size": 5},
        hovertext=[
            f"{label}, epoch {int(row.epoch)}<br>mean {number(row.mean)} "
            f"(range {number(row.low)} to {number(row.high)}, n = {row.n})"
            for row in own.itertuples()
        ],
        hoverinfo="text",
    )


def _stopped_early(stopped: pd.DataFrame, color: str, label: str) -> go.Scatter:
    """A cross at the last epoch of each of a setting's trials stopped early."""
    return go.Scatter(
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
    )
