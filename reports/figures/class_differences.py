"""Per class: each class's difference from the setting it is compared with, and how much of a
setting's movement its few largest classes carry. Both read `comparisons.comparison_data`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from reports.figures._common import go, number, style
from reports.figures.comparisons import _comparison_title, _plot_labels, _row_keys, compared_with
from reports.page import plot_text


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
