"""What mattered in a search: the parameter importances, and Optuna's own figures of the
study (parallel coordinates, slices, intermediate values).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import optuna
import pandas as pd

from reports.figures._common import go, style
from reports.page import plot_text
from reports.search import quiet_optuna


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
