"""The verdicts of one or more studies as tables for a paper: Markdown, LaTeX and CSV.

``python -m reports verdict FOLDER... --out DIR`` writes ``verdict.md``, ``verdict.tex`` and
``verdict.csv``: one table per study and Holm family (against the baseline; the contrasts), its
settings as rows, validation and test side by side, and each table's caption naming its Holm
family and what its intervals vary over. A study replicated on several class splits has a row per
setting and split, one saying whether the verdict holds on every split, and a line saying how many
classes the splits share. The files hold no date and no absolute path (a study is named by its
folder's name), so the same folders give the same files, byte for byte.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gapan.files import write_atomic
from reports import figures, stats, tables
from reports.load import ResultsError
from reports.splits import (
    EVERY_SPLIT,
    ROW_COLUMNS,
    TUNED_VALIDATION_CAVEAT,
    FamilyComparison,
    comparison_rows,
    family_comparisons,
    is_tuned,
    shared_classes,
    study_results,
)

MARKDOWN_FILE, LATEX_FILE, CSV_FILE = "verdict.md", "verdict.tex", "verdict.csv"
# The two groups of columns of a table, as its caption names them.
VALIDATION, TEST = "validation", "test"
CSV_COLUMNS = ["study", *ROW_COLUMNS]
# The columns of each metric, validation then test, in every table.
METRIC_COLUMNS = (
    "difference",
    f"95% {stats.OVER_SEEDS}",
    f"95% {stats.OVER_SEEDS_AND_CLASSES}",
    "verdict",
)


@dataclass(frozen=True)
class VerdictTable:
    """One study's Holm family, validation and test side by side.

    Attributes:
        study: The study's folder name.
        title: The study and the family, e.g. "compare_tuned: each method against gapan".
        caption: The Holm family and what the intervals vary over, in words.
        metrics: The metrics side by side, validation first.
        columns: The leading columns (setting, the split when there are splits, seeds).
        rows: Every row's cells as text: the leading columns, then `METRIC_COLUMNS` per metric.
        groups: How many rows each setting has (its splits and its "every split" row).
        shared_classes: How many classes each pair of splits shares (`splits.shared_classes`);
            empty for a study on one split.
    """

    study: str
    title: str
    caption: str
    metrics: list[str]
    columns: list[str]
    rows: list[list[str]]
    groups: list[int]
    shared_classes: str = ""


def folder_name(folder: Path | str) -> str:
    """A study's name in the verdict files: its folder's name, never its path."""
    return Path(os.path.abspath(folder)).name


def collect(
    folders: Sequence[Path | str], equivalence_margin: float | None = None
) -> tuple[pd.DataFrame, list[VerdictTable]]:
    """The verdicts of every study: the long table (`CSV_COLUMNS`) and one table per study and
    Holm family.

    Args:
        folders: Results folders: studies, tuned comparisons, studies on several class splits.
        equivalence_margin: Replaces every study's own margin.

    Raises:
        ResultsError: A folder is not a readable results folder (an unreadable file included),
            compares nothing (a search), or has the name of another one.
    """
    names: dict[str, Path] = {}
    frames, found = [], []
    for folder in folders:
        name = folder_name(folder)
        if name in names:
            raise ResultsError(
                f"{folder} and {names[name]} are both named {name}: the verdict files name a "
                "study by its folder, so give each a folder of its own name."
            )
        names[name] = Path(folder)
        try:
            by_split = study_results(folder, equivalence_margin)
        except OSError as error:
            # Told apart from a failure to write the files, which `write_verdicts` raises as is.
            raise ResultsError(f"cannot read {folder}: {error}") from error
        comparisons = family_comparisons(by_split, is_tuned(folder))
        if not comparisons:
            kind = next(iter(by_split.values())).kind
            why = (
                "a search compares no settings"
                if kind == "search"
                else "study.json names no baseline among its settings and no contrasts"
            )
            raise ResultsError(f"{folder} has nothing to give a verdict on: {why}.")
        rows_by_family: dict[str, list[tuple[FamilyComparison, pd.DataFrame]]] = {}
        for comparison in comparisons:
            rows = comparison_rows(comparison)
            frames.append(rows.assign(study=name))
            rows_by_family.setdefault(comparison.family, []).append((comparison, rows))
        shared = shared_classes(by_split)
        found += [_table(name, own, shared) for own in rows_by_family.values()]
    long = pd.concat(frames, ignore_index=True)[CSV_COLUMNS]
    return long, found


def _table(
    study: str, own: list[tuple[FamilyComparison, pd.DataFrame]], shared: str
) -> VerdictTable:
    """The table of one study's family from its metrics' long tables, validation first."""
    first = own[0][0]
    replicated = first.replicated
    columns = ["contrast" if first.contrasts else "setting"]
    columns += ["split"] if replicated else []
    columns.append("seeds")
    by_metric = {comparison.metric: rows for comparison, rows in own}
    settings = list(dict.fromkeys(setting for _, rows in own for setting in rows["setting"]))
    table_rows, groups = [], []
    for setting in settings:
        against = next(
            rows.loc[rows["setting"] == setting, "against"].iloc[0]
            for rows in by_metric.values()
            if (rows["setting"] == setting).any()
        )
        label = figures.row_label(setting, against, first.family)
        splits = list(
            dict.fromkeys(
                split
                for rows in by_metric.values()
                for split in rows.loc[rows["setting"] == setting, "split"]
            )
        )
        for split in splits:
            split_cells = [str(split)] if replicated else []
            table_rows.append(
                [label, *split_cells, *_metric_cells(by_metric, setting, split, replicated)]
            )
        if replicated:
            table_rows.append(_every_split_row(by_metric, setting, label))
        groups.append(len(splits) + (1 if replicated else 0))
    noun = "method"
    if not first.contrasts and next(iter(first.by_split.values()))["knob"] != "method":
        noun = "setting"
    return VerdictTable(
        study=study,
        title=f"{study}: each {noun} against {first.against}",
        caption=_caption(own),
        metrics=list(by_metric),
        columns=columns,
        rows=table_rows,
        groups=groups,
        shared_classes=shared,
    )


def _metric_cells(
    by_metric: dict[str, pd.DataFrame], setting: str, split: object, replicated: bool
) -> list[str]:
    """A row's seeds and, for each metric, its difference, intervals and verdict (empty cells
    where the metric has no such row); `split` counts only when `replicated`."""
    seeds: dict[str, int] = {}
    cells = []
    for metric, rows in by_metric.items():
        match = rows[rows["setting"] == setting]
        if replicated:
            match = match[match["split"] == split]
        if match.empty:
            cells += [""] * len(METRIC_COLUMNS)
            continue
        row = match.iloc[0]
        seeds[metric] = int(row["seeds"])
        cells += [
            tables.difference_text(row["difference"]),
            tables.interval_text(row["ci_low"], row["ci_high"], row["ci_confidence"]),
            tables.interval_text(row["class_ci_low"], row["class_ci_high"]),
            str(row["verdict"]),
        ]
    return [_seeds_text(seeds), *cells]


def _every_split_row(by_metric: dict[str, pd.DataFrame], setting: str, label: str) -> list[str]:
    """The row under a setting's splits: whether each metric's verdict holds on every split."""
    every = [label, EVERY_SPLIT, ""]
    for rows in by_metric.values():
        own_rows = rows[rows["setting"] == setting]
        agreement = own_rows["every_split"].iloc[0] if len(own_rows) else ""
        every += [""] * (len(METRIC_COLUMNS) - 1) + [agreement]
    return every


def _seeds_text(seeds: dict[str, int]) -> str:
    """The paired seeds of a row, by metric: validation's, with the test's after it when they
    differ ("5 (test 3)"), or "test 3" when only the test has a row."""
    validation = next((count for metric, count in seeds.items() if metric.startswith("val_")), None)
    test = next((count for metric, count in seeds.items() if not metric.startswith("val_")), None)
    if validation is None:
        return "" if test is None else f"test {test}"
    if test is None or test == validation:
        return str(validation)
    return f"{validation} (test {test})"


def _caption(own: list[tuple[FamilyComparison, pd.DataFrame]]) -> str:
    """The Holm family, what each metric's intervals vary over and at what level, and what to
    keep in mind reading them (a tuned comparison's validation, an adaptive study's test)."""
    first = own[0][0]
    comparisons = [comparison for comparison, _ in own]
    columns = {_columns(comparison): comparison for comparison in comparisons}
    better = "higher" if first.mode == "max" else "lower"
    families = " and, separately, ".join(comparison.holm_family for comparison in comparisons)
    classes = ", ".join(
        f"other {comparison.classes} in the {name} columns" for name, comparison in columns.items()
    )
    sequential = [name for name, comparison in columns.items() if comparison.sequential]
    level = f"{stats.CONFIDENCE:.0%}"
    if sequential:
        level += (
            f" except {stats.OVER_SEEDS} in the {' and '.join(sequential)} columns (an adaptive "
            "design's, at the level Holm tests each row at, given in its cell when not "
            f"{stats.CONFIDENCE:.0%})"
        )
    text = (
        f"Differences are setting minus {first.against} ({better} is better), paired by seed. "
        f"Holm family: {families}"
        + (", on each split" if first.replicated else "")
        + f"; each kind of p-value corrected separately. Intervals are unadjusted, {level}, and "
        f"never vary the split: {stats.OVER_SEEDS} varies the seeds on the same classes, "
        f"{stats.OVER_SEEDS_AND_CLASSES} the seeds and the classes ({classes}). Better or "
        f"worse needs both kinds' Holm p at most {stats.ALPHA:g}."
    )
    if first.tuned and VALIDATION in columns:
        text += f" The {VALIDATION} columns are {TUNED_VALIDATION_CAVEAT}" + (
            f"; the {TEST} columns, on classes no search saw, are the unbiased ones."
            if TEST in columns
            else "."
        )
    if first.adaptive and TEST in columns:
        caveat = figures.adaptive_test_caveat(f"the {TEST} columns")
        text += f" {caveat[:1].upper()}{caveat[1:]}."
    if sequential:
        text += " " + figures.ADAPTIVE_CLASSES_CAVEAT
    if first.replicated:
        text += (
            " Each split is a study of its own; the 'every split' row says whether every split "
            "decides a setting alike (no test across splits)."
        )
    return text


def _columns(comparison: FamilyComparison) -> str:
    """The columns of a comparison's metric, as the captions name them."""
    return VALIDATION if comparison.validation else TEST


def markdown(found: Sequence[VerdictTable]) -> str:
    """Every table as Markdown: a heading, its caption, the table."""
    parts = []
    for table in found:
        header = list(table.columns)
        for metric in table.metrics:
            prefix = "val" if metric.startswith("val_") else "test"
            header += [f"{prefix} {column}" for column in METRIC_COLUMNS]
        lines = [f"## {_markdown_cell(table.title)}", "", _markdown_cell(table.caption), ""]
        if table.shared_classes:
            lines += [_markdown_cell(table.shared_classes), ""]
        lines += [
            "| " + " | ".join(header) + " |",
            "|" + " --- |" * len(header),
        ]
        lines += ["| " + " | ".join(map(_markdown_cell, row)) + " |" for row in table.rows]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "−": "$-$",
    "±": r"$\pm$",
}
# A signed number as the tables write it (+0.0130, -0.0022), set in math so its sign is a minus
# sign and not a hyphen; a sign inside a word (1e-3) is left alone.
_SIGNED_NUMBER = re.compile(r"(?<![\w.$])([+-]\d+(?:\.\d+)?)")


def latex_text(text: str) -> str:
    """Text for LaTeX: every special character escaped, signed numbers in math."""
    escaped = "".join(LATEX_SPECIAL.get(character, character) for character in text)
    return _SIGNED_NUMBER.sub(r"$\1$", escaped)


def latex(found: Sequence[VerdictTable]) -> str:
    """Every table as a LaTeX table with booktabs rules and its caption."""
    parts = ["% Tables written by python -m reports verdict; they need \\usepackage{booktabs}."]
    for table in found:
        lead = len(table.columns)
        width = len(METRIC_COLUMNS)
        spec = "".join("r" if column == "seeds" else "l" for column in table.columns)
        spec += ("r" + "l" * (width - 1)) * len(table.metrics)
        groups, rules = [], []
        for index, metric in enumerate(table.metrics):
            split = "validation" if metric.startswith("val_") else "test"
            groups.append(f"\\multicolumn{{{width}}}{{c}}{{{latex_text(f'{split}: {metric}')}}}")
            start = lead + index * width + 1
            rules.append(f"\\cmidrule(lr){{{start}-{start + width - 1}}}")
        header = [latex_text(column) for column in table.columns]
        header += [latex_text(column) for _ in table.metrics for column in METRIC_COLUMNS]
        caption = " ".join(filter(None, (f"{table.title}.", table.caption, table.shared_classes)))
        lines = [
            "",
            f"% {latex_text(table.title)}",
            "\\begin{table}[htbp]",
            "\\centering",
            "\\small",
            f"\\caption{{{latex_text(caption)}}}",
            f"\\begin{{tabular}}{{{spec}}}",
            "\\toprule",
            "& " * lead + " & ".join(groups) + " \\\\",
            "".join(rules),
            " & ".join(header) + " \\\\",
            "\\midrule",
        ]
        index = 0
        for number, size in enumerate(table.groups):
            if number and size > 1:
                lines.append("\\addlinespace")  # between the settings of a replicated study
            for row in table.rows[index : index + size]:
                lines.append(" & ".join(latex_text(cell) for cell in row) + " \\\\")
            index += size
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
        parts.append("\n".join(lines))
    return "\n".join(parts) + "\n"


def write_verdicts(
    folders: Sequence[Path | str], out: Path | str, equivalence_margin: float | None = None
) -> list[Path]:
    """Write verdict.md, verdict.tex and verdict.csv of the studies in `folders` to `out`.

    Args:
        folders: Results folders (see `collect`).
        out: The folder to write to; created when missing.
        equivalence_margin: Replaces every study's own margin.

    Returns:
        The paths written.

    Raises:
        ResultsError: As `collect`: a folder cannot be read.
        OSError: `out` cannot be written (never a folder that cannot be read).
    """
    long, found = collect(folders, equivalence_margin)
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    csv_text = tables.spreadsheet_safe(long).to_csv(index=False, lineterminator="\n")
    written = []
    for name, text in (
        (MARKDOWN_FILE, markdown(found)),
        (LATEX_FILE, latex(found)),
        (CSV_FILE, csv_text),
    ):
        write_atomic(directory / name, text)
        written.append(directory / name)
    return written
