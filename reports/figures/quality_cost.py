"""Quality against cost: each setting's (or a search's each trial's) metric against its cost,
and the points no other beats on both.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from reports.figures._common import go, style
from reports.load import Results, setting_order, usable_trials
from reports.page import plot_text


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
