"""A search's optimisation history: every trial's metric and the best so far."""

from __future__ import annotations

import numpy as np
import pandas as pd

from reports.figures._common import (
    STATUS_COLORS,
    STATUS_WORDS,
    add_reference_line,
    go,
    number,
    style,
)
from reports.load import Results
from reports.page import plot_text


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
