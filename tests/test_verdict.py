"""`python -m reports verdict`: the verdict tables of studies as Markdown, LaTeX and CSV."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from fake_results import ablation_folder, search_folder, splits_folder

import reports.verdict
from reports.__main__ import main
from reports.splits import caveat, family_comparisons, interval_words, study_results
from reports.verdict import CSV_COLUMNS, CSV_FILE, LATEX_FILE, MARKDOWN_FILE, latex_text

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "results" / "studies-cpu-2026-12-04"
FILES = (MARKDOWN_FILE, LATEX_FILE, CSV_FILE)


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """An ablation, a comparison with contrasts, and a comparison replicated on two splits."""
    root = tmp_path_factory.mktemp("verdict")
    ablation = ablation_folder(
        root / "ablate_depth", effects={"0": 0.0, "2": 0.0, "4": -0.03}, seeds=5, noise=0.001
    )
    effects = {"gapan": 0.0, "proxy_anchor": -0.02, "proxy_anchor_gapan": 0.02}
    contrasts = {"proxy_anchor_gapan": "proxy_anchor"}
    compare = ablation_folder(
        root / "compare_methods",
        kind="compare",
        effects=effects,
        baseline="gapan",
        seeds=5,
        contrasts=contrasts,
    )
    replicated = splits_folder(
        root / "compare_on_splits",
        [effects, {**effects, "proxy_anchor": 0.03}],
        kind="compare",
        baseline="gapan",
        seeds=5,
        contrasts=contrasts,
    )
    return [ablation, compare, replicated]


def verdicts(folders: list[Path], out: Path, *options: str) -> dict[str, str]:
    assert main(["verdict", *map(str, folders), "--out", str(out), *options]) == 0
    return {name: (out / name).read_text(encoding="utf-8") for name in FILES}


def test_verdict_writes_three_files_the_same_every_time(studies, tmp_path, capsys) -> None:
    first = verdicts(studies, tmp_path / "first")
    assert capsys.readouterr().out.split() == [str(tmp_path / "first" / name) for name in FILES]
    again = verdicts(studies, tmp_path / "again")
    for name in FILES:
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
        # No path and no date: the same folders anywhere give the same files.
        assert str(studies[0].parent) not in first[name]
        assert not re.search(r"20\d\d-\d\d-\d\d", first[name])
    assert first == again

    table = pd.read_csv(tmp_path / "first" / CSV_FILE, keep_default_na=False)
    assert list(table.columns) == CSV_COLUMNS
    assert CSV_COLUMNS[:16] == [
        "study",
        "family",
        "holm_family",
        "split",
        "setting",
        "against",
        "metric",
        "seeds",
        "difference",
        "ci_low",
        "ci_high",
        "p_holm",
        "class_ci_low",
        "class_ci_high",
        "class_p_holm",
        "verdict",
    ]
    assert list(dict.fromkeys(table["study"])) == [
        "ablate_depth",
        "compare_methods",
        "compare_on_splits",
    ]
    compare = table[table["study"] == "compare_methods"]
    assert set(compare["family"]) == {"against gapan", "contrasts"}
    contrast = compare[(compare["family"] == "contrasts") & (compare["metric"] == "test_map_at_r")]
    assert contrast[["setting", "against"]].values.tolist() == [
        ["proxy_anchor_gapan", "proxy_anchor"]
    ]
    assert list(contrast["holm_family"]) == ["the 1 tested contrast on test_map_at_r"]
    assert list(contrast["verdict"]) == ["better"]
    ablation = table[table["study"] == "ablate_depth"]
    assert set(ablation["holm_family"]) == {
        f"the 2 tested settings compared with flow.depth = 0 on {metric}"
        for metric in ("val_map_at_r", "test_map_at_r")
    }
    assert set(ablation["split"]) == {""}
    on_splits = table[table["study"] == "compare_on_splits"]
    assert set(on_splits["split"]) == {"0", "1"}
    proxy = on_splits[
        (on_splits["setting"] == "proxy_anchor") & (on_splits["family"] != "contrasts")
    ]
    assert set(proxy["every_split"]) == {"differs across splits"}


def test_the_markdown_table_puts_validation_and_test_side_by_side(studies, tmp_path) -> None:
    text = verdicts(studies, tmp_path)[MARKDOWN_FILE]
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == [
        "## ablate_depth: each setting against flow.depth = 0",
        "## compare_methods: each method against gapan",
        "## compare_methods: each method against the method it is contrasted with",
        "## compare_on_splits: each method against gapan",
        "## compare_on_splits: each method against the method it is contrasted with",
    ]
    assert (
        "| setting | seeds | val difference | val 95% over seeds | val 95% over seeds and classes "
        "| val verdict | test difference |" in text
    )
    assert "| contrast | split | seeds | val difference |" in text
    assert "| proxy_anchor_gapan − proxy_anchor | every split |" in text
    assert "Holm family: the 1 tested contrast on val_map_at_r and, separately," in text
    assert "Intervals are unadjusted, 95%, and never vary the split" in text
    assert (
        "the seeds and the classes (other validation classes in the validation columns, other "
        "unseen test classes in the test columns)" in text
    )
    for line in text.splitlines():
        if line.startswith("| proxy_anchor_gapan − proxy_anchor | 0 |"):
            cells = line.split(" | ")
            assert re.fullmatch(r"[+-]\d\.\d{4}", cells[3])
            assert re.fullmatch(r"[+-]\d\.\d{4} to [+-]\d\.\d{4}", cells[4])


def test_latex_escapes_names_and_sets_signs_as_minus_signs(studies, tmp_path) -> None:
    text = verdicts(studies, tmp_path)[LATEX_FILE]
    assert text.count("\\begin{tabular}") == 5 and text.count("\\toprule") == 5
    assert "proxy\\_anchor\\_gapan $-$ proxy\\_anchor" in text
    assert "val\\_map\\_at\\_r" in text and "95\\% over seeds" in text
    body = re.sub(r"\\[a-z]+", "", text)
    assert not re.search(r"(?<!\\)_", body.replace("\\_", ""))
    assert re.search(r"\$[+-]0\.\d{4}\$ to \$[+-]0\.\d{4}\$", text)
    assert latex_text("a_b & 50% {x} ~ $1 #2 ^ \\") == (
        r"a\_b \& 50\% \{x\} \textasciitilde{} \$1 \#2 \textasciicircum{} \textbackslash{}"
    )
    assert latex_text("-0.0022 to +0.0068, lr 1e-3") == "$-0.0022$ to $+0.0068$, lr 1e-3"


def test_the_equivalence_margin_can_be_given_for_every_study(studies, tmp_path) -> None:
    text = verdicts(studies[:1], tmp_path, "--equivalence-margin", "0.05")[MARKDOWN_FILE]
    row = next(line for line in text.splitlines() if line.startswith("| 2 |"))
    assert row.endswith("| equivalent within ±0.05 |")


def test_an_adaptive_study_s_caption_gives_its_levels_and_calls_its_test_descriptive(
    tmp_path,
) -> None:
    folder = ablation_folder(
        tmp_path / "adaptive",
        kind="compare",
        effects={"gapan": 0.0, "proxy_anchor": -0.02, "norm_softmax": -0.04},
        baseline="gapan",
        seeds=5,
    )
    study = json.loads((folder / "study.json").read_text())
    study["sequential"] = {"min_seeds": 3, "max_seeds": 10, "comparisons": 4}
    (folder / "study.json").write_text(json.dumps(study))
    text = verdicts([folder], tmp_path / "out")[MARKDOWN_FILE]
    assert "Intervals are unadjusted, 95% except over seeds in the validation columns" in text
    assert "Intervals are 95%" not in text
    assert (
        "This study chose its seeds on validation, so read the test columns as descriptive" in text
    )
    # Holm tests the row it rejects first at 1 - 0.05/2.
    row = next(line for line in text.splitlines() if line.startswith("| norm_softmax |"))
    cells = row.split(" | ")
    assert re.fullmatch(r"[+-]\d\.\d{4} to [+-]\d\.\d{4} at \d+\.\d%", cells[3]), row
    assert not cells[7].endswith("%"), row  # the test's interval over seeds is a fixed one
    # The page of a study on several splits words each metric alike.
    by_metric = {c.metric: c for c in family_comparisons(study_results(folder))}
    validation, test = by_metric["val_map_at_r"], by_metric["test_map_at_r"]
    assert "over seeds (an adaptive design's repeated" in interval_words(validation)
    assert "other seeds and other validation classes would" in interval_words(validation)
    assert "over seeds (95%)" in interval_words(test)
    assert "other seeds and other unseen test classes would" in interval_words(test)
    assert "fixed-sample" in caveat(validation) and "descriptive" not in caveat(validation)
    assert caveat(test).startswith("This study chose its seeds on validation")


def test_the_seeds_column_names_the_test_s_seeds_when_they_differ_or_stand_alone() -> None:
    seeds_text = reports.verdict._seeds_text
    assert seeds_text({"val_map_at_r": 5, "test_map_at_r": 5}) == "5"
    assert seeds_text({"val_map_at_r": 5, "test_map_at_r": 3}) == "5 (test 3)"
    assert seeds_text({"val_map_at_r": 5}) == "5"
    assert seeds_text({"test_map_at_r": 3}) == "test 3"
    assert seeds_text({}) == ""


def one_error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_errors_are_one_line_and_exit_2(studies, tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "out"
    assert main(["verdict", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "nowhere is not a folder" in one_error(capsys)
    search = search_folder(tmp_path / "search", trials=6)
    assert main(["verdict", str(studies[0]), str(search), "--out", str(out)]) == 2
    assert "nothing to give a verdict on: a search compares no settings" in one_error(capsys)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["verdict", str(studies[0]), "--out", str(blocker / "out")]) == 2
    assert "cannot write to" in one_error(capsys)

    # A folder that cannot be read is not a folder that cannot be written to.
    def unreadable(folder, margin):
        raise PermissionError(13, "Permission denied", str(Path(folder) / "trials.csv"))

    monkeypatch.setattr(reports.verdict, "study_results", unreadable)
    assert main(["verdict", str(studies[0]), "--out", str(out)]) == 2
    error = one_error(capsys)
    assert f"cannot read {studies[0]}" in error and "Permission denied" in error
    assert "cannot write" not in error
    monkeypatch.undo()
    twin = ablation_folder(tmp_path / "elsewhere" / studies[0].name, seeds=3)
    assert main(["verdict", str(studies[0]), str(twin), "--out", str(out)]) == 2
    assert "are both named ablate_depth" in one_error(capsys)
    assert not out.exists()


def test_a_folder_named_verdict_is_reported_on_as_a_path(tmp_path, monkeypatch, capsys) -> None:
    ablation_folder(tmp_path / "verdict", seeds=3)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_status:
        main(["verdict"])
    assert exit_status.value.code == 2
    assert "FOLDER" in capsys.readouterr().err
    assert main(["./verdict"]) == 0
    assert (tmp_path / "verdict" / "report.html").is_file()


# The README's tables of these two committed studies (test MAP@R), as `--markdown` printed
# them: setting, difference, interval over seeds, over seeds and classes, verdict.
README_ROWS = {
    "compare_tuned_frozen": [
        ("gapan_no_flow", "+0.0023", "-0.0022 to +0.0068", "-0.0049 to +0.0095", "undecided"),
        ("proxy_anchor", "+0.0130", "+0.0096 to +0.0163", "+0.0025 to +0.0235", "better"),
        (
            "norm_softmax",
            "-0.0077",
            "-0.0122 to -0.0031",
            "-0.0148 to -0.0005",
            "significant over seeds only",
        ),
    ],
    "ablate_flow_depth_frozen": [
        ("1", "-0.0028", "-0.0043 to -0.0013", "-0.0055 to -0.0001", "worse"),
        ("2", "-0.0046", "-0.0066 to -0.0025", "-0.0073 to -0.0018", "worse"),
        ("4", "-0.0060", "-0.0081 to -0.0039", "-0.0091 to -0.0029", "worse"),
        ("8", "-0.0062", "-0.0072 to -0.0052", "-0.0091 to -0.0033", "worse"),
        ("16", "-0.0075", "-0.0110 to -0.0040", "-0.0113 to -0.0037", "worse"),
    ],
}


def test_verdict_of_the_committed_studies_gives_the_readme_s_numbers(tmp_path) -> None:
    folders = [BENCH / "ablate_flow_depth_frozen", BENCH / "compare_tuned_frozen"]
    text = verdicts(folders, tmp_path)[MARKDOWN_FILE]
    for study, rows in README_ROWS.items():
        section = text.split(f"## {study}: ")[1].split("\n## ")[0]
        for setting, difference, seeds, classes, verdict in rows:
            line = next(row for row in section.splitlines() if row.startswith(f"| {setting} |"))
            assert line.endswith(f"| {difference} | {seeds} | {classes} | {verdict} |"), line
