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

from reports import ResultsError, build_report, load_results, stats
from reports.__main__ import main
from reports.build import comparison_tables
from reports.figures import comparison_data
from reports.splits import DIFFERS, HOLDS, ROW_COLUMNS, split_folders, study_results

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
    with pytest.raises(ResultsError, match="split_1 is missing"):
        split_folders(broken)
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
    assert "Each method against the method it adds to, on each class split" in rest
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


def test_markdown_of_a_splits_folder_gives_each_split_its_tables(top, tmp_path, capsys) -> None:
    assert main([str(top), "--out", str(tmp_path / "report.html"), "--markdown"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == str(tmp_path / "report.html")
    titles = [line for line in printed.splitlines() if line.startswith("compare_splits, ")]
    assert titles == [
        f"compare_splits, split {split}: {metric}{what}"
        for split in (0, 1)
        for what in (" minus method = gapan", ", each method minus the method it adds to")
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
