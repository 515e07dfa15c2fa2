"""The README's verdict tables are `python -m reports verdict`'s output from the committed raw
tables of the verdict studies, regenerated here byte for byte."""

import re
from pathlib import Path

import pytest

from reports.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
BENCH_RESULTS = ROOT / "bench" / "results"
RECORD = BENCH_RESULTS / "studies-cpu-2026-12-05"
# The command of RECORD/README.md: the studies in the README's order, and the margin.
STUDIES = [
    "studies-cpu-2026-12-05/compare_tuned_frozen_splits",
    "studies-cpu-2026-12-05/compare_tuned_partial",
    "studies-cpu-2026-12-05/ablate_addon_flow_depth_frozen_splits",
    "studies-cpu-2026-12-05/ablate_flow_depth_frozen_splits",
]
MARGIN = "0.01"
OUTPUTS = ("verdict.md", "verdict.tex", "verdict.csv")


def markdown_tables(text: str) -> list[str]:
    """Each Markdown table of `text`: its header, rule and rows, as one block."""
    return re.findall(r"(?:^\|.*\|\n)+", text, flags=re.MULTILINE)


@pytest.mark.slow
def test_the_verdict_tables_regenerate_from_the_committed_studies_and_are_the_readme_s(tmp_path):
    folders = [str(BENCH_RESULTS / name) for name in STUDIES]
    out = tmp_path / "verdict"
    assert main(["verdict", *folders, "--equivalence-margin", MARGIN, "--out", str(out)]) == 0
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (RECORD / "verdict" / name).read_bytes(), name
    tables = markdown_tables((out / "verdict.md").read_text(encoding="utf-8"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(tables) >= len(STUDIES)  # each study against its baseline, then its contrasts
    missing = [table.splitlines()[2] for table in tables if table not in readme]
    assert not missing, f"README.md lacks the verdict tables that begin {missing}"
