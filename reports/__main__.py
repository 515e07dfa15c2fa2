"""Command line: ``python -m reports RESULTS_DIR [--out FILE]``, and
``python -m reports verdict FOLDER... --out DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reports.build import build_report, comparison_tables
from reports.load import ResultsError

VERDICT = "verdict"


def main(argv: list[str] | None = None) -> int:
    """Build a report, or with ``verdict`` first, write the verdict tables; returns the exit
    status.

    0 when the report was written (each note it shows is also printed as a warning, e.g.
    malformed rows left out); 2 when the folder cannot be reported on: not a results folder,
    or a study that has not finished (the message says how to resume it). A folder named
    ``verdict`` is reported on as ``./verdict``.
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == [VERDICT]:
        return verdict_main(arguments[1:])
    parser = argparse.ArgumentParser(
        prog="python -m reports",
        description="Write report.html and report_*.csv from a study's results folder. "
        "`python -m reports verdict FOLDER... --out DIR` writes the verdict tables of one or "
        "more studies instead (see `python -m reports verdict --help`).",
    )
    parser.add_argument("results_dir", type=Path, help="the study's results folder")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="HTML file to write (default RESULTS_DIR/report.html)",
    )
    _margin_option(parser)
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="also print each comparison with the baseline (validation, then test) as a "
        "Markdown table, both intervals labelled",
    )
    arguments = parser.parse_args(arguments)
    margin = _checked_margin(parser, arguments.equivalence_margin)
    try:
        path = build_report(
            arguments.results_dir,
            arguments.out,
            on_note=lambda note: print(f"warning: {note}", file=sys.stderr),
            equivalence_margin=margin,
        )
    except ResultsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    if arguments.markdown:
        for title, table in comparison_tables(arguments.results_dir, margin):
            print(f"\n{title}\n\n{table}")
    return 0


def verdict_main(argv: list[str]) -> int:
    """``python -m reports verdict FOLDER... --out DIR``: 0 when the files were written; 2, with
    one line ``error: ...``, when a folder cannot be read or compares nothing, or DIR cannot be
    written."""
    from reports.verdict import CSV_FILE, LATEX_FILE, MARKDOWN_FILE, write_verdicts

    parser = argparse.ArgumentParser(
        prog=f"python -m reports {VERDICT}",
        description=f"Write {MARKDOWN_FILE}, {LATEX_FILE} and {CSV_FILE}: each study's "
        "comparisons (against its baseline; its contrasts), validation and test side by side, "
        "with both intervals, their Holm family and the verdict. To build the report of a "
        f"folder named {VERDICT}, write ./{VERDICT}.",
    )
    parser.add_argument(
        "folders",
        type=Path,
        nargs="+",
        metavar="FOLDER",
        help="results folders: studies, tuned comparisons, studies on several class splits",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder to write the three files to"
    )
    _margin_option(parser)
    arguments = parser.parse_args(argv)
    margin = _checked_margin(parser, arguments.equivalence_margin)
    try:
        written = write_verdicts(arguments.folders, arguments.out, margin)
    except ResultsError as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: cannot write to {arguments.out}: {_one_line(error)}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _margin_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--equivalence-margin",
        type=float,
        default=None,
        help="call a setting equivalent to the one it is compared with when its "
        "(1 - 2 alpha / k) intervals, k compared in its Holm family, lie inside +- this (in "
        "the metric's units); default: each study's own (study.json)",
    )


def _checked_margin(parser: argparse.ArgumentParser, margin: float | None) -> float | None:
    if margin is not None and not 0 < margin < float("inf"):
        parser.error(f"--equivalence-margin must be a positive number; got {margin}")
    return margin


if __name__ == "__main__":
    sys.exit(main())
