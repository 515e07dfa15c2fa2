"""A study replicated on several class splits: its folders, its replication table and its
report."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from fake_results import ablation_folder, search_folder, splits_folder
from plotly.offline import get_plotlyjs
from test_reports import CHROMIUM, _render

from reports import ResultsError, UnfinishedStudyError, build_report, load_results, stats
from reports.__main__ import main
from reports.build import comparison_tables
from reports.figures import comparison_data
from reports.page import escape
from reports.splits import (
    DIFFERS,
    HOLDS,
    ROW_COLUMNS,
    UNTESTED,
    FamilyComparison,
    agree,
    agreement_sentence,
    caveat,
    family_comparisons,
    is_tuned,
    shared_classes,
    split_folders,
    study_results,
)
from reports.verdict import MARKDOWN_FILE, write_verdicts

# Normalized Softmax is worse on both splits; Proxy-Anchor better on one and worse on the other.
SPLIT_EFFECTS = [
    {"gapan": 0.0, "proxy_anchor": 0.04, "norm_softmax": -0.05, "norm_softmax_gapan": -0.05},
    {"gapan": 0.0, "proxy_anchor": -0.04, "norm_softmax": -0.05, "norm_softmax_gapan": -0.05},
]
CONTRASTS = {"norm_softmax_gapan": "norm_softmax"}


def replicated(directory: Path) -> Path:
    return splits_folder(
        directory,
        SPLIT_EFFECTS,
        kind="compare",
        baseline="gapan",
        seeds=5,
        noise=0.002,
        contrasts=CONTRASTS,
    )


@pytest.fixture(scope="module")
def top(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return replicated(tmp_path_factory.mktemp("splits") / "compare_splits")


def test_a_splits_folder_is_recognised_and_a_missing_split_is_named(top, tmp_path) -> None:
    assert split_folders(top) == {0: top / "split_0", 1: top / "split_1"}
    assert split_folders(top / "split_0") is None
    assert split_folders(tmp_path) is None
    broken = tmp_path / "broken"
    shutil.copytree(top, broken)
    shutil.rmtree(broken / "split_1")
    # A run stopped before its last split: resumable, and the message says how.
    with pytest.raises(UnfinishedStudyError, match="split_1 is missing") as missing:
        split_folders(broken)
    assert "run the same command with --resume" in str(missing.value)
    assert main([str(broken)]) == 2
    study = json.loads((broken / "study.json").read_text())
    (broken / "study.json").write_text(json.dumps({**study, "splits": [0, 0]}))
    with pytest.raises(ResultsError, match="'splits' must be a list of distinct split numbers"):
        build_report(broken)


def test_the_report_of_a_splits_folder_compares_the_splits_side_by_side(top) -> None:
    out = build_report(top)
    assert out == top / "report.html"
    for split in (0, 1):
        assert (top / f"split_{split}" / "report.html").is_file()
        assert (top / f"split_{split}" / "report_comparisons.csv").is_file()
    page = out.read_text(encoding="utf-8")
    assert page.count(get_plotlyjs()) == 1
    rest = page.replace(get_plotlyjs(), "")
    assert 'href="split_0/report.html"' in rest and 'href="split_1/report.html"' in rest
    assert "could not be drawn" not in rest
    assert "Against gapan, on each class split" in rest
    assert "Each method against the method it is contrasted with, on each class split" in rest
    assert "Holm family on each split: the 3 tested methods compared with gapan" in rest
    assert "the same verdict on every split: norm_softmax worse" in rest
    assert "differs across splits: proxy_anchor (split 0 better, split 1 worse)" in rest

    rows = pd.read_csv(top / "report_replication.csv", keep_default_na=False)
    assert list(rows.columns) == ROW_COLUMNS
    assert set(rows["family"]) == {"against gapan", "contrasts"}
    for split in (0, 1):
        results = load_results(top / f"split_{split}")
        for family in stats.FAMILIES:
            for metric in ("val_map_at_r", "test_map_at_r"):
                data = comparison_data(results, metric, family)
                own = rows[
                    (rows["split"] == split)
                    & (rows["metric"] == metric)
                    & (
                        rows["family"]
                        == ("contrasts" if family == "contrasts" else "against gapan")
                    )
                ].set_index("setting")
                expected = data["comparisons"].set_index("setting")
                assert list(own.index) == list(expected.index)
                for column, theirs in (
                    ("difference", "mean_difference"),
                    ("ci_low", "ci_low"),
                    ("class_ci_high", "class_ci_high"),
                    ("p_holm", "p_holm"),
                    ("class_p_holm", "class_p_holm"),
                ):
                    assert list(own[column]) == pytest.approx(list(expected[theirs].astype(float)))
                assert list(own["holm_family"].unique()) == [data["holm_family"]]
    test = rows[(rows["metric"] == "test_map_at_r") & (rows["family"] == "against gapan")]
    every = test.groupby("setting")["every_split"].first()
    assert every["norm_softmax"] == f"{HOLDS}: {stats.WORSE}"
    assert every["proxy_anchor"] == DIFFERS
    contrast = rows[rows["family"] == "contrasts"]
    assert set(contrast["against"]) == {"norm_softmax"}


def verdict_markdown(folder: Path, out: Path) -> str:
    write_verdicts([folder], out)
    return (out / MARKDOWN_FILE).read_text(encoding="utf-8")


def long_rows(verdicts: dict[str, list[str | None]]) -> pd.DataFrame:
    """A long table (`comparison_rows`) of settings and their verdict on splits 0, 1 and 2; None:
    the split did not compare the setting."""
    rows = [
        {"setting": setting, "against": "gapan", "split": split, "verdict": verdict}
        for setting, each in verdicts.items()
        for split, verdict in enumerate(each)
        if verdict is not None
    ]
    return pd.DataFrame(rows)


AGREEMENTS = {
    "better": (["better"] * 3, f"{HOLDS}: better"),
    "equivalent": (["equivalent within ±0.01"] * 3, f"{HOLDS}: equivalent within ±0.01"),
    "undecided": ([stats.UNDECIDED] * 3, "undecided on every split"),
    "seeds_only": ([stats.SEEDS_ONLY] * 3, "significant over seeds only on every split"),
    "precise": ([stats.PRECISE_ENOUGH] * 3, "precise enough, not decided on every split"),
    "one_no_test": (["better", stats.NO_VERDICT, "better"], "not tested on split 1"),
    "one_absent": (["worse", "worse", None], "not tested on split 2"),
    "two_untested": ([None, "better", stats.NO_VERDICT], "not tested on splits 0, 2"),
    "no_test": ([stats.NO_VERDICT, None, stats.NO_VERDICT], UNTESTED),
    "differs": (["better", "worse", "better"], DIFFERS),
    "mixed_undecided": ([stats.UNDECIDED, stats.SEEDS_ONLY, stats.UNDECIDED], DIFFERS),
}


def test_only_verdicts_decided_alike_on_every_split_hold_on_every_split() -> None:
    rows = long_rows({setting: verdicts for setting, (verdicts, _) in AGREEMENTS.items()})
    found = agree(rows, [0, 1, 2])
    assert found == {setting: expected for setting, (_, expected) in AGREEMENTS.items()}

    comparison = FamilyComparison(
        stats.BASELINE_FAMILY, "gapan", "test_map_at_r", {0: {}, 1: {}, 2: {}}
    )
    sentence = agreement_sentence(comparison, rows)
    assert sentence.tone == "warn"
    holds = sentence.text.split("the same verdict on every split: ")[1].split("; decided")[0]
    assert holds == "better better; equivalent equivalent within ±0.01"
    assert (
        "decided on no split (nothing replicated): undecided undecided on every split; "
        "seeds_only significant over seeds only on every split; precise precise enough, not "
        "decided on every split;" in sentence.text
    )
    assert "one_absent (not tested on split 2; split 0 worse, split 1 worse)" in sentence.text
    assert f"{UNTESTED} ({stats.TOO_FEW_SEEDS}): no_test" in sentence.text
    decided = long_rows({"better": ["better"] * 3})
    assert agreement_sentence(comparison, decided).tone == "plain"


# Three splits of 10 test and 6 validation classes: split 1 shares half of split 0's test
# classes and all its validation classes; split 2 shares 3 test classes with split 0, none with
# split 1, and no validation class with either.
SPLIT_CLASS_NAMES = [
    {"val": [f"v{i}" for i in range(6)], "test": [f"t{i}" for i in range(10)]},
    {"val": [f"v{i}" for i in range(6)], "test": [f"t{i}" for i in range(5, 15)]},
    {
        "val": [f"v{i}" for i in range(10, 16)],
        "test": ["t0", "t1", "t2", *(f"u{i}" for i in range(7))],
    },
]
SHARED = (
    "Unseen test classes shared: split 0 & 1: 5 of 10; 0 & 2: 3 of 10; 1 & 2: 0 of 10. "
    "Validation classes shared: split 0 & 1: 6 of 6; 0 & 2: 0 of 6; 1 & 2: 0 of 6."
)


def test_the_page_and_the_verdicts_say_how_many_classes_the_splits_share(tmp_path) -> None:
    effects = {"gapan": 0.0, "proxy_anchor": -0.03}
    top = splits_folder(
        tmp_path / "overlap",
        [effects] * 3,
        kind="compare",
        baseline="gapan",
        seeds=3,
        split_class_names=SPLIT_CLASS_NAMES,
    )
    assert shared_classes(study_results(top)).endswith(SHARED)
    assert "not independent replications" in shared_classes(study_results(top))
    page = build_report(top).read_text(encoding="utf-8")
    assert escape(SHARED) in page
    markdown = verdict_markdown(top, tmp_path / "verdict")
    assert markdown.count(SHARED) == 1  # one table: the study has no contrasts
    (top / "split_2" / "class_scores.csv").unlink()
    text = shared_classes(study_results(top))
    assert "split 0 & 1: 5 of 10; 0 & 2: unknown; 1 & 2: unknown." in text
    assert "Split 2 kept no class_scores.csv" in text
    # A study on one split shares nothing with another.
    assert shared_classes(study_results(top / "split_0")) == ""


def test_markdown_of_a_splits_folder_gives_each_split_its_tables(top, tmp_path, capsys) -> None:
    assert main([str(top), "--out", str(tmp_path / "report.html"), "--markdown"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == str(tmp_path / "report.html")
    titles = [line for line in printed.splitlines() if line.startswith("compare_splits, ")]
    assert titles == [
        f"compare_splits, split {split}: {metric}{what}"
        for split in (0, 1)
        for what in (
            " minus method = gapan",
            ", each method minus the method it is contrasted with",
        )
        for metric in ("val_map_at_r", "test_map_at_r")
    ]
    assert "| norm_softmax_gapan − norm_softmax | 5 |" in printed
    # The top page links each split's report from where it was written.
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    link = Path(os.path.relpath(top / "split_1" / "report.html", tmp_path)).as_posix()
    assert f'href="{link}"' in page and not link.startswith("/")


def test_the_equivalence_margin_of_the_top_folder_applies_to_each_split(top, tmp_path) -> None:
    folder = tmp_path / "margin"
    shutil.copytree(top, folder)
    study = json.loads((folder / "study.json").read_text())
    (folder / "study.json").write_text(json.dumps({**study, "equivalence_margin": 0.2}))
    for results in study_results(folder).values():
        assert results.study["equivalence_margin"] == 0.2
    for results in study_results(folder, equivalence_margin=0.01).values():
        assert results.study["equivalence_margin"] == 0.01
    assert all("equivalence_margin" not in r.study for r in study_results(top).values())


def tuned_split(directory: Path, methods: dict[str, float], rng_seed: int) -> Path:
    """A tuned comparison's folder: each method's search and the confirmation."""
    study = {
        "name": "compare_tuned",
        "kind": "tuned",
        "metric": "val_map_at_r",
        "mode": "max",
        "methods": {method: {"fixed": {}, "search": {}} for method in methods},
        "contrasts": {"gapan": "proxy_anchor"},
        "equivalence_margin": 0.05,
    }
    directory.mkdir(parents=True)
    (directory / "study.json").write_text(json.dumps(study))
    for method in methods:
        search_folder(directory / f"search_{method}", trials=6, rng_seed=rng_seed)
    ablation_folder(
        directory / "confirm",
        kind="compare",
        effects=methods,
        baseline="gapan",
        seeds=3,
        rng_seed=rng_seed,
    )
    return directory


def test_a_tuned_comparison_on_splits_reads_each_split_s_confirmation(tmp_path, capsys) -> None:
    top = tmp_path / "tuned_splits"
    methods = {"gapan": 0.0, "proxy_anchor": -0.02}
    for split in (0, 1):
        tuned_split(top / f"split_{split}", methods, rng_seed=split)
    study = json.loads((top / "split_0" / "study.json").read_text())
    (top / "study.json").write_text(json.dumps({**study, "splits": [0, 1]}))
    for split, results in study_results(top).items():
        assert results.directory == top / f"split_{split}" / "confirm"
        # The tuned comparison's own contrasts and margin reach its confirmation.
        assert results.study["contrasts"] == {"gapan": "proxy_anchor"}
        assert results.study["equivalence_margin"] == 0.05
    titles = [title for title, _ in comparison_tables(top)]
    assert titles[0] == "compare_tuned, split 0: val_map_at_r minus method = gapan"
    assert len(titles) == 8
    # Each method's validation numbers are measured on the classes its search chose on.
    comparisons = family_comparisons(study_results(top), is_tuned(top))
    assert is_tuned(top) and all(comparison.tuned for comparison in comparisons)
    validation = [caveat(c) for c in comparisons if c.metric == "val_map_at_r"]
    assert validation and all("(the winner's curse)" in text for text in validation)
    assert not any(caveat(c) for c in comparisons if c.metric == "test_map_at_r")
    markdown = verdict_markdown(top, tmp_path / "verdict")
    assert (
        "The validation columns are measured on the validation classes each method's "
        "configuration was chosen on" in markdown
    )
    assert "the test columns, on classes no search saw, are the unbiased ones" in markdown


def test_a_search_on_splits_has_nothing_to_replicate_but_still_a_page(tmp_path) -> None:
    top = tmp_path / "search_splits"
    for split in (0, 1):
        search_folder(top / f"split_{split}", trials=6, rng_seed=split)
    study = json.loads((top / "split_0" / "study.json").read_text())
    (top / "study.json").write_text(json.dumps({**study, "splits": [0, 1]}))
    assert comparison_tables(top) == []
    page = build_report(top).read_text(encoding="utf-8")
    assert "nothing to replicate" in page
    assert (top / "split_1" / "report.html").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")
def test_the_splits_page_and_a_split_s_contrasts_render_in_a_browser(top, tmp_path) -> None:
    top_page = build_report(top)
    split_page = top / "split_0" / "report.html"
    for page in (top_page, split_page):
        profile = tmp_path / f"profile-{page.parent.name}"
        rendered = _render(page, profile)
        shutil.rmtree(profile, ignore_errors=True)
        assert rendered.error_count == "0", page
        assert rendered.figures and all(rendered.figures), f"a figure of {page} did not render"
    text = " ".join(_render(split_page, tmp_path / "profile-again").text)
    assert "norm_softmax_gapan − norm_softmax" in text
