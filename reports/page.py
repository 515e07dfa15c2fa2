"""HTML assembly: one self-contained page (inline CSS, plotly.js inlined once, no requests).

Every string from the results (configs, trial ids, settings, errors, environment) goes through
`escape` here, or through `plot_text` before plotly; the page's own markup is the only HTML.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from reports.summary import Sentence

INTEGER_COLUMNS = {"number", "seed", "epochs", "n", "pairs", "n_pairs", "trials", "val_n", "test_n"}
P_VALUE_COLUMNS = {"p", "Holm p", "p_value", "p_holm"}
STATUS_CLASSES = {
    "completed": "status-completed",
    "stopped_early": "status-stopped",
    "failed": "status-failed",
    "diverged": "status-diverged",
    "interrupted": "status-interrupted",
}
LONG_TEXT = 90


def escape(value: Any) -> str:
    """Any value as HTML text (the page's own markup)."""
    return html.escape(str(value), quote=True)


def plot_text(value: Any) -> str:
    """Any value as text for a plotly title, label or hover text.

    plotly.js reads such text as a small subset of HTML (``<b>``, ``<br>``, ``<a href>``) and
    decodes only a few entities (``&amp;``, ``&lt;``, ``&gt;``, numeric ones; not ``&quot;``), so
    ``&``, ``<`` and ``>`` are escaped, once, and quotes are left as they are.
    """
    return html.escape(str(value), quote=False)


@dataclass(frozen=True)
class Section:
    """A titled part of the page; `body` is HTML built by this module's helpers."""

    anchor: str
    title: str
    body: str


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def format_cell(value: Any, column: str) -> tuple[str, str | None]:
    """The text shown for a cell and, for numbers, the key the sort uses."""
    if _is_missing(value):
        return "", None
    if isinstance(value, bool | np.bool_):
        return ("yes" if value else "no"), None
    if isinstance(value, int | np.integer):
        return str(int(value)), repr(float(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if column in INTEGER_COLUMNS and number.is_integer():
            shown = str(int(number))
        elif column in P_VALUE_COLUMNS:
            shown = f"{number:.3g}"
        elif not math.isfinite(number):
            shown = str(number)
        elif abs(number) >= 1e4:
            shown = f"{number:,.0f}"
        else:
            shown = f"{number:.4g}"
        return shown, repr(number)
    return str(value), None


def _cell_html(value: Any, column: str) -> str:
    shown, sort_key = format_cell(value, column)
    attribute = f' data-sort="{escape(sort_key)}"' if sort_key is not None else ""
    if column == "status" and shown in STATUS_CLASSES:
        return (
            f'<td{attribute}><span class="status {STATUS_CLASSES[shown]}">'
            f"{escape(shown.replace('_', ' '))}</span></td>"
        )
    if column in ("error", "reason") and shown:
        return f'<td class="text"{attribute}>{_long_text(shown)}</td>'
    numeric = ' class="number"' if sort_key is not None else ""
    return f"<td{numeric}{attribute}>{escape(shown)}</td>"


def _long_text(text: str) -> str:
    """Short text as is; a traceback or long message folded under its first line."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    if "\n" not in text.strip() and len(text) <= LONG_TEXT:
        return escape(text)
    head = first if len(first) <= LONG_TEXT else first[:LONG_TEXT] + "…"
    return f"<details><summary>{escape(head)}</summary><pre>{escape(text)}</pre></details>"


def table_html(
    frame: pd.DataFrame, *, sortable: bool = False, caption: str = "", wide: bool = False
) -> str:
    """A DataFrame as an HTML table (every cell escaped); sortable tables sort on header click."""
    classes = "data sortable" if sortable else "data"
    hint = ' title="Click to sort"' if sortable else ""
    header = "".join(f"<th{hint}>{escape(column)}</th>" for column in frame.columns)
    rows = []
    for values in frame.itertuples(index=False, name=None):
        cells = "".join(
            _cell_html(value, column) for value, column in zip(values, frame.columns, strict=True)
        )
        rows.append(f"<tr>{cells}</tr>")
    caption_html = f"<caption>{escape(caption)}</caption>" if caption else ""
    table = (
        f'<table class="{classes}">{caption_html}<thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return f'<div class="table-wrap{" wide" if wide else ""}">{table}</div>'


def pairs_html(rows: Sequence[tuple[str, str]], caption: str = "") -> str:
    """(key, value) rows as a two-column table, both escaped."""
    body = "".join(
        f"<tr><th>{escape(key)}</th><td>{_long_text(str(value))}</td></tr>" for key, value in rows
    )
    caption_html = f"<caption>{escape(caption)}</caption>" if caption else ""
    table = f'<table class="pairs">{caption_html}<tbody>{body}</tbody></table>'
    return f'<div class="table-wrap">{table}</div>'


def paragraph(text: str, css_class: str = "") -> str:
    """Escaped text as a paragraph."""
    attribute = f' class="{escape(css_class)}"' if css_class else ""
    return f"<p{attribute}>{escape(text)}</p>"


def figure_html(figure: go.Figure, div_id: str, caption: str) -> str:
    """A plotly figure (plotly.js is inlined once in the head, not here) with a caption."""
    height = figure.layout.height or 420
    div = pio.to_html(
        figure,
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        default_height=f"{height}px",
        config={
            "displaylogo": False,
            "responsive": True,
            "toImageButtonOptions": {"format": "svg", "filename": div_id},
        },
    )
    return f'<figure class="plot">{div}<figcaption>{escape(caption)}</figcaption></figure>'


ERROR_RECORDER = """
(function () {
  // Script errors are written into #script-errors (and shown), so a reader, and a headless
  // browser dumping the DOM, can see that a figure failed.
  var errors = [];
  function show() {
    var box = document.getElementById("script-errors");
    if (!box) { return; }
    box.setAttribute("data-count", String(errors.length));
    box.textContent = errors.join("\\n");
    if (errors.length) { box.hidden = false; }
  }
  window.addEventListener("error", function (event) {
    errors.push("error: " + (event.message || "a resource failed to load"));
    show();
  }, true);
  window.addEventListener("unhandledrejection", function (event) {
    errors.push("unhandled rejection: " + String(event.reason));
    show();
  });
  document.addEventListener("DOMContentLoaded", show);
})();
"""

TABLE_SORT = """
(function () {
  function key(cell) {
    var raw = cell.getAttribute("data-sort");
    if (raw !== null) { return {number: parseFloat(raw), text: ""}; }
    return {number: NaN, text: cell.textContent.trim()};
  }
  function compare(a, b) {
    var emptyA = isNaN(a.number) && a.text === "", emptyB = isNaN(b.number) && b.text === "";
    if (emptyA || emptyB) { return emptyA === emptyB ? 0 : (emptyA ? 1 : -1); }
    if (!isNaN(a.number) && !isNaN(b.number)) { return a.number - b.number; }
    return a.text.localeCompare(b.text, undefined, {numeric: true});
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (header, column) {
      header.addEventListener("click", function () {
        var ascending = header.getAttribute("aria-sort") !== "ascending";
        table.querySelectorAll("thead th").forEach(function (other) {
          other.removeAttribute("aria-sort");
        });
        header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (first, second) {
          var order = compare(key(first.cells[column]), key(second.cells[column]));
          return ascending ? order : -order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
})();
"""

STYLE = """
:root { --ink: #1d232a; --muted: #5b6570; --line: #dde3ea; --panel: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 32px 64px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 40px 0 8px; padding-top: 8px; border-top: 1px solid var(--line); }
h3 { font-size: 16px; margin: 20px 0 6px; }
.question { font-size: 17px; color: var(--muted); margin: 0 0 12px; font-style: italic; }
.facts { display: flex; flex-wrap: wrap; gap: 6px 8px; margin: 0 0 18px; padding: 0; }
.facts li { list-style: none; background: var(--panel); border: 1px solid var(--line);
  border-radius: 4px; padding: 1px 8px; font-size: 13px; }
.facts b { font-weight: 600; color: var(--muted); }
.summary { background: var(--panel); border: 1px solid var(--line); border-radius: 6px;
  padding: 12px 18px; margin: 0 0 12px; }
.summary h2 { border: 0; margin: 0 0 6px; padding: 0; font-size: 18px; }
.summary ul { margin: 0; padding-left: 20px; }
.summary li { margin: 4px 0; }
.summary li:first-child { font-size: 16px; font-weight: 600; }
.tone-good { color: #1a6e3a; }
.tone-warn { color: #9a4f00; }
.notes { border-left: 4px solid #e08a1e; background: #fff8ec; padding: 8px 14px; margin: 0 0 12px; }
.script-errors { border-left: 4px solid #c8414b; background: #fdecee; padding: 8px 14px;
  white-space: pre-wrap; }
nav { font-size: 14px; margin: 8px 0 0; }
nav a { margin-right: 14px; color: #1f4e79; text-decoration: none; }
nav a:hover { text-decoration: underline; }
figure.plot { margin: 12px 0 20px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 2px; }
.lead { color: var(--muted); font-size: 14px; margin: 4px 0 8px; }
.table-wrap { overflow-x: auto; margin: 8px 0 16px; }
.table-wrap.wide { max-height: 640px; overflow-y: auto; border: 1px solid var(--line); }
table { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
caption { text-align: left; color: var(--muted); padding: 0 0 4px; }
table.data th, table.data td { padding: 4px 10px; border-bottom: 1px solid var(--line);
  text-align: left; white-space: nowrap; vertical-align: top; }
table.data td.number { text-align: right; }
table.data td.text { white-space: normal; min-width: 240px; max-width: 520px; }
table.data thead th { position: sticky; top: 0; background: #eef2f6; z-index: 1; }
table.data tbody tr:nth-child(even) { background: #fafbfc; }
table.sortable thead th { cursor: pointer; user-select: none; }
table.sortable thead th[aria-sort="ascending"]::after { content: " ▲"; font-size: 10px; }
table.sortable thead th[aria-sort="descending"]::after { content: " ▼"; font-size: 10px; }
table.pairs th { text-align: left; padding: 3px 14px 3px 0; color: var(--muted); font-weight: 500;
  vertical-align: top; white-space: nowrap; }
table.pairs td { padding: 3px 0; word-break: break-word; }
.status { border-radius: 3px; padding: 0 6px; font-size: 12px; color: #fff; }
.status-completed { background: #2a7ab0; }
.status-stopped { background: #e08a1e; }
.status-failed { background: #c8414b; }
.status-diverged { background: #7b4ea3; }
.status-interrupted { background: #8a8a8a; }
details summary { cursor: pointer; }
pre { white-space: pre-wrap; font-size: 12px; margin: 4px 0; }
.columns { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr));
  gap: 8px 32px; }
footer { margin-top: 48px; color: var(--muted); font-size: 12px; }
"""


def render_page(
    *,
    title: str,
    question: str,
    facts: Sequence[tuple[str, str]],
    notes: Sequence[str],
    summary: Sequence[Sentence],
    sections: Sequence[Section],
    footer: str,
) -> str:
    """The whole page: head (CSS, error recorder, plotly.js), header, summary, sections."""
    fact_items = "".join(f"<li><b>{escape(k)}</b> {escape(v)}</li>" for k, v in facts)
    note_html = ""
    if notes:
        note_html = '<div class="notes">' + "".join(paragraph(n) for n in notes) + "</div>"
    summary_items = "".join(
        f'<li class="tone-{escape(sentence.tone)}">{escape(sentence.text)}</li>'
        for sentence in summary
    )
    navigation = "".join(
        f'<a href="#{escape(section.anchor)}">{escape(section.title)}</a>' for section in sections
    )
    body = "".join(
        f'<section id="{escape(section.anchor)}"><h2>{escape(section.title)}</h2>'
        f"{section.body}</section>"
        for section in sections
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{STYLE}</style>
<script>{ERROR_RECORDER}</script>
<script>{get_plotlyjs()}</script>
</head>
<body>
<main>
<pre id="script-errors" class="script-errors" data-count="0" hidden></pre>
<header>
<h1>{escape(title)}</h1>
{paragraph(question, "question") if question else ""}
<ul class="facts">{fact_items}</ul>
</header>
{note_html}
<div class="summary"><h2>Summary</h2><ul>{summary_items}</ul></div>
<nav>{navigation}</nav>
{body}
<footer>{escape(footer)}</footer>
</main>
<script>{TABLE_SORT}</script>
</body>
</html>
"""
