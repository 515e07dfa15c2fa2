"""Command line: ``python -m reports RESULTS_DIR [--out FILE]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reports.build import build_report, comparison_tables
from reports.load import ResultsError


def main(argv: list[str] | None = None) -> int:
    """Build a report; returns the exit status.

    0 when the report was written (each note it shows is also printed as a warning, e.g.
    malformed rows left out); 2 when the folder cannot be reported on: not a results folder,
    or a study that has not finished (the message says how to resume it).
    """
    parser = argparse.ArgumentParser(
        prog="python -m reports",
        description="Write report.html and report_*.csv from a study's results folder.",
    )
    parser.add_argument("results_dir", type=Path, help="the study's results folder")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="HTML file to write (default RESULTS_DIR/report.html)",
    )
    parser.add_argument(
        "--equivalence-margin",
        type=float,
        default=None,
        help="call a setting equivalent to the baseline when its (1 - 2 alpha / k) intervals, "
        "k settings compared, lie inside +- this (in the metric's units); default: the "
        "study's own (study.json)",
    )
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="also print each comparison with the baseline (validation, then test) as a "
        "Markdown table, both intervals labelled",
    )
    arguments = parser.parse_args(argv)
    margin = arguments.equivalence_margin
    if margin is not None and not 0 < margin < float("inf"):
        parser.error(f"--equivalence-margin must be a positive number; got {margin}")
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


if __name__ == "__main__":
    sys.exit(main())
