"""A comparison's contrasts (each method against the method it is contrasted with): their own Holm
family, their section of the report, their tables and their Markdown."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from fake_results import ablation_folder
from plotly.offline import get_plotlyjs

from gapan.sequential import holm
from reports import ResultsError, build_report, load_results, stats
from reports.__main__ import main
from reports.figures import comparison_data, comparison_families, contrast_pairs

# Each loss with GAPan added: Proxy-Anchor gains clearly, Normalized Softmax nothing.
EFFECTS = {
    "gapan": 0.0,
    "proxy_anchor": -0.02,
    "proxy_anchor_gapan": 0.02,
    "norm_softmax": -0.03,
    "norm_softmax_gapan": -0.03,
}
CONTRASTS = {"proxy_anchor_gapan": "proxy_anchor", "norm_softmax_gapan": "norm_softmax"}


def compare_folder(directory: Path, contrasts: dict | None = CONTRASTS, **options) -> Path:
    return ablation_folder(
        directory,
        kind="compare",
        effects=EFFECTS,
        baseline="gapan",
        seeds=5,
        noise=0.002,
        contrasts=contrasts,
        **options,
    )


@pytest.fixture(scope="module")
def with_contrasts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compare_folder(tmp_path_factory.mktemp("contrasts") / "compare")


@pytest.mark.parametrize("metric", ["val_map_at_r", "test_map_at_r"])
def test_contrasts_are_a_holm_family_of_their_own(with_contrasts, tmp_path, metric) -> None:
    results = load_results(with_contrasts)
    assert comparison_families(results) == [stats.BASELINE_FAMILY, stats.CONTRASTS_FAMILY]
    data = comparison_data(results, metric, stats.CONTRASTS_FAMILY)
    contrasts = data["comparisons"].set_index("setting")
    assert data["baseline"] is None and data["family"] == stats.CONTRASTS_FAMILY
    assert data["holm_family"] == f"the 2 tested contrasts on {metric}"
    assert dict(contrasts["baseline"]) == CONTRASTS
    # Holm over the two contrasts only, for each kind of p-value.
    assert list(contrasts["p_holm"]) == pytest.approx(list(holm(contrasts["p_value"])))
    assert list(contrasts["class_p_holm"]) == pytest.approx(list(holm(contrasts["class_p_value"])))
    trials = results.trials.set_index(["setting", "seed"])[metric]
    gain = (trials.loc["proxy_anchor_gapan"] - trials.loc["proxy_anchor"]).mean()
    assert contrasts.loc["proxy_anchor_gapan", "mean_difference"] == pytest.approx(gain)
    assert stats.verdict(contrasts.loc["proxy_anchor_gapan"], "max") == stats.BETTER
    assert stats.verdict(contrasts.loc["norm_softmax_gapan"], "max") != stats.BETTER
    # The comparisons with the baseline are the same as in the study without contrasts.
    plain = load_results(compare_folder(tmp_path / "plain", contrasts=None))
    assert comparison_families(plain) == [stats.BASELINE_FAMILY]
    pd.testing.assert_frame_equal(
        comparison_data(results, metric)["comparisons"],
        comparison_data(plain, metric)["comparisons"],
    )


def test_the_report_has_a_section_and_tables_for_the_contrasts(with_contrasts) -> None:
    out = build_report(with_contrasts)
    page = out.read_text(encoding="utf-8").replace(get_plotlyjs(), "")
    assert "could not be drawn" not in page
    assert "Each method against the method it is contrasted with" in page
    assert "Holm family: the 2 tested contrasts on val_map_at_r, a family of its own" in page
    assert 'id="figure-contrasts"' in page and 'id="figure-comparison"' in page
    for name in ("contrasts", "test_contrasts", "comparisons", "test_comparisons"):
        assert (with_contrasts / f"report_{name}.csv").is_file(), name
    table = pd.read_csv(with_contrasts / "report_test_contrasts.csv")
    assert list(table["setting"]) == list(CONTRASTS)
    assert list(table["baseline"]) == list(CONTRASTS.values())
    baseline = pd.read_csv(with_contrasts / "report_comparisons.csv")
    assert len(baseline) == len(EFFECTS) - 1


def test_markdown_names_both_methods_of_a_contrast_and_keeps_the_baseline_tables(
    with_contrasts, tmp_path, capsys
) -> None:
    assert main([str(with_contrasts), "--out", str(tmp_path / "r.html"), "--markdown"]) == 0
    printed = capsys.readouterr().out
    titles = [line for line in printed.splitlines() if line.startswith("compare_methods: ")]
    assert titles == [
        "compare_methods: val_map_at_r minus method = gapan",
        "compare_methods: test_map_at_r minus method = gapan",
        "compare_methods: val_map_at_r, each method minus the method it is contrasted with",
        "compare_methods: test_map_at_r, each method minus the method it is contrasted with",
    ]
    baseline, contrasts = printed.split(titles[2])
    assert "| setting | seeds | difference |" in baseline and "| contrast |" not in baseline
    assert "| contrast | seeds | difference |" in contrasts
    assert "| proxy_anchor_gapan − proxy_anchor | 5 | +0.04" in contrasts


def test_a_contrast_of_a_setting_not_run_is_left_out_with_a_note(tmp_path) -> None:
    folder = compare_folder(tmp_path / "compare", contrasts={**CONTRASTS, "other": "gapan"})
    assert contrast_pairs(load_results(folder)) == list(CONTRASTS.items())
    notes = []
    build_report(folder, on_note=notes.append)
    assert any("other − gapan" in note for note in notes)


def test_contrasts_must_map_settings_to_settings(tmp_path) -> None:
    folder = compare_folder(tmp_path / "compare")
    study = json.loads((folder / "study.json").read_text())
    study["contrasts"] = ["proxy_anchor_gapan"]
    (folder / "study.json").write_text(json.dumps(study))
    with pytest.raises(ResultsError, match="'contrasts' must be a JSON object"):
        load_results(folder)


def test_an_adaptive_study_with_contrasts_still_reports_them(tmp_path) -> None:
    # The runner refuses this combination; a folder that has it anyway must not break the report.
    folder = compare_folder(tmp_path / "compare")
    study = json.loads((folder / "study.json").read_text())
    study["sequential"] = {"min_seeds": 3, "max_seeds": 10, "comparisons": 4}
    (folder / "study.json").write_text(json.dumps(study))
    results = load_results(folder)
    assert comparison_data(results)["sequential"]
    contrasts = comparison_data(results, family=stats.CONTRASTS_FAMILY)
    assert not contrasts["sequential"]
    assert set(contrasts["comparisons"]["test"]) == {stats.PAIRED_T}
    page = build_report(folder).read_text(encoding="utf-8")
    assert "could not be drawn" not in page
