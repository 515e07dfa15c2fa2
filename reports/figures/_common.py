"""What every figure shares: plotly (imported here, and only here), the colours and words of
the trial statuses, the report's look (`style`), numbers in hover text, the setting axis and the
pretrained reference's dashed line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots as make_subplots  # for the figure modules

from reports.load import setting_numbers
from reports.page import plot_text

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


def axis_kind(values: Sequence[Any]) -> str:
    """The x axis for settings of these values (`gapan.results.setting_values`): `log` for
    positive numbers spanning more than a decade, `linear` for other numbers, `category` for
    anything else."""
    numbers = setting_numbers(values)
    if numbers is None:
        return "category"
    if min(numbers) > 0 and max(numbers) / min(numbers) > 10:
        return "log"
    return "linear"


def setting_positions(settings: Sequence[str], values: Sequence[Any], axis: str) -> list[Any]:
    """Where each setting sits on an axis of `axis_kind`: its value on a number axis, its text
    on a category axis.

    Args:
        settings: The settings' text, in report order.
        values: Their values, in the same order.
        axis: The axis, from `axis_kind`.
    """
    if axis == "category":
        return [plot_text(setting) for setting in settings]
    return [float(value) for value in values]


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


def _setting_axis(
    figure: go.Figure,
    settings: Sequence[str],
    axis: str,
    title: str,
    positions: Sequence[Any] = (),
    **where: Any,
) -> None:
    """The x axis of settings, labelled with their text; on a number axis (`axis_kind`) they
    sit at `positions` (`setting_positions`)."""
    if axis == "category":
        figure.update_xaxes(
            type="category",
            categoryorder="array",
            categoryarray=setting_positions(settings, positions, axis),
            title_text=title,
            **where,
        )
    else:
        figure.update_xaxes(
            type=axis,
            tickvals=list(positions),
            ticktext=[plot_text(setting) for setting in settings],
            title_text=title,
            **where,
        )


def interval_bars(
    center: pd.Series,
    low: pd.Series,
    high: pd.Series,
    thickness: float,
    width: float,
    color: str | None = None,
) -> dict[str, Any]:
    """Plotly error bars from `center` down to `low` and up to `high`; none where a bound is
    missing."""
    bars = {
        "type": "data",
        "array": (high - center).fillna(0),
        "arrayminus": (center - low).fillna(0),
        "thickness": thickness,
        "width": width,
    }
    return bars if color is None else {**bars, "color": color}
