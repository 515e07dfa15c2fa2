"""Tests of the report package: statistics with hand-checked answers, figure data on fake
results, the pretrained reference, the still-improving flag, escaping, whole reports, and the
page in a real headless browser."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_results import (
    TEST_SHIFT,
    ablation_folder,
    pretrained_reference,
    search_folder,
    splits_folder,
)
from plotly.offline import get_plotlyjs

from gapan.results import setting_values
from reports import ResultsError, build_report, load_results, stats
from reports.__main__ import main
from reports.convergence import (
    ONE_SEED,
    TOO_SHORT,
    flagged_settings,
    late_rises,
    still_improving,
    still_improving_data,
)
from reports.figures import (
    REFERENCE_LABEL,
    axis_kind,
    comparison_data,
    cost_data,
    draw_comparison,
    draw_history,
    draw_learning_curves,
    draw_metric_by_setting,
    draw_validation_test,
    history_data,
    learning_curve_data,
    metric_by_setting_data,
    study_wall_time,
    validation_test_data,
)
from reports.load import (
    Results,
    UnfinishedStudyError,
    baseline_setting,
    setting_order,
    usable_trials,
)
from reports.page import TABLE_SORT, escape, table_html
from reports.reference import (
    TrainingGain,
    reference_data,
    reference_mismatches,
    training_gain,
)
from reports.search import optuna_study, param_importances
from reports.summary import reference_sentence, still_improving_sentence
from reports.tables import FORMULA_STARTS, REFERENCE_ROW, settings_table, spreadsheet_cell

HOSTILE = "<script>alert(1)</script>"
CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]


# Statistics on hand-made tables.


def test_t_interval_matches_hand_computation() -> None:
    # values 1..5: mean 3, sample sd sqrt(2.5) = 1.5811, standard error 1.5811 / sqrt(5) = 0.70711;
    # t(0.975, df 4) = 2.7764, half width 2.7764 * 0.70711 = 1.9632 -> [1.0368, 4.9632].
    interval = stats.t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert interval.n == 5
    assert interval.mean == pytest.approx(3.0)
    assert interval.low == pytest.approx(1.0368, abs=1e-4)
    assert interval.high == pytest.approx(4.9632, abs=1e-4)


def test_t_interval_ignores_nan_and_has_no_bounds_for_one_value() -> None:
    one = stats.t_interval([0.4, math.nan])
    assert one.n == 1 and one.mean == pytest.approx(0.4)
    assert math.isnan(one.low) and math.isnan(one.high)
    assert stats.t_interval([]).n == 0


def _values(rows: dict[str, dict[int, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            (setting, seed, value)
            for setting, by_seed in rows.items()
            for seed, value in by_seed.items()
        ],
        columns=["setting", "seed", "value"],
    )


def test_paired_difference_pairs_by_seed_and_matches_hand_computation() -> None:
    # Differences on the shared seeds 0, 1, 2: 0.03, 0.02, 0.04 (seed 3 has no baseline run).
    # Mean 0.03, sd 0.01, se 0.01 / sqrt(3) = 0.0057735; t(0.975, df 2) = 4.3027 -> half width
    # 0.024841. t = 0.03 / 0.0057735 = 5.1962; with 2 df the t CDF is 1/2 + t / (2 sqrt(2 + t^2))
    # = 0.5 + 5.1962 / (2 * 5.3852) = 0.98242, so p = 2 * (1 - 0.98242) = 0.03516. d_z = 3.
    values = _values(
        {"base": {0: 0.30, 1: 0.32, 2: 0.34}, "x": {0: 0.33, 1: 0.34, 2: 0.38, 3: 0.50}}
    )
    pairs = stats.paired_differences(values, "x", "base")
    assert list(pairs["seed"]) == [0, 1, 2]
    assert np.allclose(pairs["difference"], [0.03, 0.02, 0.04])
    row = stats.compare_to_baseline(values, "base", ["base", "x"]).iloc[0]
    assert row["setting"] == "x" and row["n_pairs"] == 3
    assert row["mean_difference"] == pytest.approx(0.03)
    assert row["ci_low"] == pytest.approx(0.03 - 0.024841, abs=1e-5)
    assert row["ci_high"] == pytest.approx(0.03 + 0.024841, abs=1e-5)
    assert row["test"] == stats.PAIRED_T
    assert row["statistic"] == pytest.approx(5.1962, abs=1e-3)
    assert row["p_value"] == pytest.approx(0.03516, abs=1e-4)
    assert row["effect_size_dz"] == pytest.approx(3.0)


def test_holm_adjusts_in_step_down_order() -> None:
    # Sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 = 0.04 -> raised to 0.06
    # by the running maximum; back in input order: 0.03, 0.06, 0.06, 0.02.
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert np.allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    # NaN is neither adjusted nor counted (m = 2 here), and adjusted values cap at 1.
    with_missing = stats.holm([0.01, math.nan, 0.04])
    assert with_missing[0] == pytest.approx(0.02) and with_missing[2] == pytest.approx(0.04)
    assert math.isnan(with_missing[1])
    assert np.allclose(stats.holm([0.5, 0.6]), [1.0, 1.0])


def test_holm_is_applied_across_settings() -> None:
    rng = np.random.default_rng(0)
    values = _values(
        {
            "base": {seed: 0.3 + 0.01 * seed for seed in range(4)},
            "a": {seed: 0.33 + 0.01 * seed + rng.normal(0, 0.002) for seed in range(4)},
            "b": {seed: 0.30 + 0.01 * seed + rng.normal(0, 0.01) for seed in range(4)},
        }
    )
    table = stats.compare_to_baseline(values, "base", ["base", "a", "b"])
    assert list(table["setting"]) == ["a", "b"]
    assert np.allclose(table["p_holm"], stats.holm(table["p_value"]))
    assert bool(table.set_index("setting").loc["a", "significant"])


def test_too_few_seeds_get_no_test_and_say_so() -> None:
    values = _values({"base": {0: 0.30, 1: 0.31}, "x": {0: 0.35, 1: 0.36}})
    row = stats.compare_to_baseline(values, "base", ["base", "x"]).iloc[0]
    assert row["n_pairs"] == 2
    assert row["test"] == stats.NO_TEST
    assert row["note"] == "too few seeds for a test"
    assert math.isnan(row["p_value"]) and not row["significant"]


@pytest.mark.parametrize(
    ("pairs", "test"),
    [
        (1, stats.NO_TEST),
        (2, stats.NO_TEST),
        (3, stats.PAIRED_T),
        (5, stats.PAIRED_T),
        (6, stats.WILCOXON),
        (10, stats.WILCOXON),
    ],
)
def test_test_choice_depends_on_pairs(pairs: int, test: str) -> None:
    assert stats.choose_test(pairs) == test
    differences = np.linspace(0.01, 0.02, pairs)
    assert stats.paired_test(differences).name == test


def test_wilcoxon_p_value_is_exact_for_six_positive_pairs() -> None:
    # All six signs positive: one of 2^6 sign patterns on each side, two-sided p = 2 / 64.
    result = stats.paired_test([0.01, 0.02, 0.03, 0.04, 0.05, 0.06])
    assert result.name == stats.WILCOXON
    assert result.p_value == pytest.approx(2 / 64)


def test_identical_differences_do_not_fake_a_tiny_p_value() -> None:
    assert stats.paired_test([0.0, 0.0, 0.0]).p_value == 1.0
    result = stats.paired_test([0.1, 0.1, 0.1])
    assert math.isnan(result.p_value) and "undefined" in result.note


def test_wilcoxon_floor_is_reported_when_holm_cannot_reach_alpha() -> None:
    # Six pairs: the smallest Wilcoxon p is 2 / 64 = 0.031; Holm over two settings doubles it to
    # 0.0625, so no setting can be significant however large its effect.
    values = _values(
        {
            "base": {seed: 0.30 for seed in range(6)},
            "a": {seed: 0.40 + 0.001 * seed for seed in range(6)},
            "b": {seed: 0.50 + 0.002 * seed for seed in range(6)},
        }
    )
    table = stats.compare_to_baseline(values, "base", ["base", "a", "b"])
    assert set(table["test"]) == {stats.WILCOXON}
    assert np.allclose(table["p_value"], 2 / 64)
    assert not table["significant"].any()
    assert table["note"].str.contains("add seeds").all()
    assert stats.smallest_p_value(stats.WILCOXON, 8) * 2 < stats.ALPHA


# Loading.


def test_a_folder_without_study_json_is_not_a_results_folder(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match=r"study\.json is missing.*not a results folder"):
        load_results(tmp_path)


def _study_in_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> Path:
    """An ablation study's folder under ./results, as a study script writes it by default."""
    monkeypatch.chdir(tmp_path)
    return ablation_folder(tmp_path / "results" / name)


def _tune_state(folder: Path) -> None:
    """The experiment state Tune saves under tune/ once it has started the study."""
    state = folder / "tune" / "experiment_state-2025-11-26_03-00-00.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text("{}", encoding="utf-8")


@pytest.mark.parametrize("trials_file", ["missing", "empty"])
def test_a_killed_study_says_it_is_unfinished_and_how_to_resume(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    trials_file: str,
) -> None:
    folder = _study_in_results(tmp_path, monkeypatch, "ablate_flow_depth")
    for name in ("trials.csv", "epochs.csv", "environment.json"):
        (folder / name).unlink()
    if trials_file == "empty":
        (folder / "trials.csv").write_text("", encoding="utf-8")
    _tune_state(folder)
    with pytest.raises(UnfinishedStudyError, match="unfinished study") as error:
        load_results(folder)
    assert "`python studies/ablate_flow_depth.py --resume --seeds 3`" in str(error.value)
    assert main([str(folder)]) != 0
    printed = capsys.readouterr().err
    assert (
        "unfinished study" in printed and "python studies/ablate_flow_depth.py --resume" in printed
    )
    assert "not a results folder" not in printed and "Traceback" not in printed


def test_the_resume_command_names_a_folder_of_another_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _study_in_results(tmp_path, monkeypatch, "depth_rerun")
    (folder / "trials.csv").unlink()
    _tune_state(folder)
    with pytest.raises(
        UnfinishedStudyError,
        match=r"`python studies/ablate_flow_depth\.py --resume --name depth_rerun --seeds 3`",
    ):
        load_results(folder)


def test_a_part_of_a_study_on_splits_is_resumed_by_the_whole_study_s_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    top = splits_folder(tmp_path / "results" / "replicated", [{"0": 0.0, "2": 0.01}] * 2)
    for name in ("trials.csv", "epochs.csv", "environment.json"):
        (top / "split_1" / name).unlink()
    _tune_state(top / "split_1")
    command = "`python studies/compare_splits.py --resume --name replicated --splits 2 --seeds 3`"
    with pytest.raises(UnfinishedStudyError) as error:
        load_results(top / "split_1")
    assert command in str(error.value)


def test_a_study_stopped_before_its_first_trial_says_to_start_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _study_in_results(tmp_path, monkeypatch, "ablate_flow_depth")
    (folder / "trials.csv").unlink()
    with pytest.raises(UnfinishedStudyError) as error:
        load_results(folder)
    message = str(error.value)
    assert "stopped before its first trial" in message and "nothing to resume" in message
    assert "`python studies/ablate_flow_depth.py --seeds 3`" in message


def _trial_line(folder: Path, trial_id: str) -> int:
    """The line of trials.csv that holds `trial_id` (1 = the header)."""
    lines = (folder / "trials.csv").read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, 1) if trial_id in line)


def test_a_trials_table_cut_mid_row_is_reported_from_its_good_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = ablation_folder(tmp_path / "study")
    path = folder / "trials.csv"
    line = _trial_line(folder, "train_5f3a1_00017")
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: text.index("train_5f3a1_00017") + 40], encoding="utf-8")

    results = load_results(folder)
    assert len(results.trials) == 17
    assert "train_5f3a1_00017" not in set(results.trials["trial_id"])
    (note,) = [note for note in results.notes if "malformed" in note]
    assert note.startswith(f"{path}: 1 malformed row left out")
    assert f"line {line} (trial train_5f3a1_00017)" in note

    assert main([str(folder)]) == 0
    printed = capsys.readouterr().err
    assert f"warning: {path}: 1 malformed row" in printed and f"line {line}" in printed
    assert len(pd.read_csv(folder / "report_trials.csv")) == 17
    assert f"line {line} (trial train_5f3a1_00017)" in (folder / "report.html").read_text()


def test_an_epochs_table_cut_inside_its_last_number_is_noted(tmp_path: Path) -> None:
    # The row still has every field and its last number still parses: only the missing line
    # break at the end of the file tells that it was cut.
    folder = ablation_folder(tmp_path / "study")
    path = folder / "epochs.csv"
    text = path.read_text(encoding="utf-8")
    path.write_text(text[:-3], encoding="utf-8")
    rows = len(pd.read_csv(folder / "epochs.csv"))
    results = load_results(folder)
    assert len(results.epochs) == rows - 1
    (note,) = [note for note in results.notes if "malformed" in note]
    assert f"{path}: 1 malformed row" in note and f"line {rows + 1}" in note and "cut off" in note
    build_report(folder)


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("val_map_at_r", "0.3x1", "val_map_at_r is '0.3x1', not a number"),
        ("seed", "two", "seed is 'two', not a number"),
        ("status", "running", "status 'running' is not one of completed,"),
        ("setting", "", "no setting (the value of flow.depth)"),
        ("trial_id", "", "no trial_id"),
    ],
)
def test_a_mangled_trial_row_is_named_and_left_out(
    tmp_path: Path, column: str, value: str, problem: str
) -> None:
    folder = ablation_folder(tmp_path / "study")
    trials = pd.read_csv(folder / "trials.csv", dtype=str, keep_default_na=False)
    trials.loc[4, column] = value  # flow.depth = 1, seed 1, on line 6
    if column == "setting":
        trials.loc[4, "config/flow.depth"] = ""  # else the setting is read from the config
    trials.to_csv(folder / "trials.csv", index=False)

    results = load_results(folder)
    assert len(results.trials) == 17 and 4 not in set(results.trials["number"])
    (note,) = [note for note in results.notes if "malformed" in note]
    trial = "" if column == "trial_id" else " (trial train_5f3a1_00004)"
    assert f"line 6{trial}: {problem}" in note
    (gap,) = [note for note in results.notes if "planned" in note]
    assert "1 of the 18 (setting, seed) pairs" in gap and "flow.depth = 1 with seed 1" in gap
    out = build_report(folder)
    assert "could not be drawn" not in _without_plotly(out.read_text(encoding="utf-8"))


def test_a_row_with_an_extra_field_is_named(tmp_path: Path) -> None:
    folder = ablation_folder(tmp_path / "study")
    path = folder / "trials.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[5] = lines[5].rstrip("\n") + ",surplus\n"
    path.write_text("".join(lines), encoding="utf-8")
    header = len(lines[0].split(","))
    (note,) = [note for note in load_results(folder).notes if "malformed" in note]
    assert (
        f"line 6 (trial train_5f3a1_00004): {header + 1} fields where the header has {header}"
        in note
    )


def test_trials_without_any_good_row_or_metric_column_are_errors(tmp_path: Path) -> None:
    folder = ablation_folder(tmp_path / "study")
    trials = pd.read_csv(folder / "trials.csv")
    trials.assign(status="running").to_csv(folder / "trials.csv", index=False)
    with pytest.raises(ResultsError, match="holds no well-formed row: line 2 .*'running'"):
        load_results(folder)
    trials.drop(columns=["val_map_at_r"]).to_csv(folder / "trials.csv", index=False)
    with pytest.raises(ResultsError, match="no 'val_map_at_r' column"):
        load_results(folder)


def test_a_trials_table_with_its_header_only_still_gets_a_report(tmp_path: Path) -> None:
    folder = ablation_folder(tmp_path / "study")
    path = folder / "trials.csv"
    path.write_text(path.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    results = load_results(folder)
    assert len(results.trials) == 0
    (note,) = [note for note in results.notes if "planned" in note]
    assert "no trial for 18 of the 18 (setting, seed) pairs" in note
    assert build_report(folder).is_file()


def test_pairs_missing_from_the_plan_are_named(tmp_path: Path) -> None:
    folder = ablation_folder(tmp_path / "study")
    assert not [note for note in load_results(folder).notes if "planned" in note]
    trials = pd.read_csv(folder / "trials.csv", dtype=str, keep_default_na=False)
    gone = {"train_5f3a1_00008", "train_5f3a1_00017"}  # flow.depth 2 and 16, seed 2
    trials[~trials["trial_id"].isin(gone)].to_csv(folder / "trials.csv", index=False)
    (note,) = [note for note in load_results(folder).notes if "planned" in note]
    assert "no trial for 2 of the 18 (setting, seed) pairs" in note
    assert "6 settings of flow.depth x 3 seeds" in note
    assert "flow.depth = 2 with seed 2, flow.depth = 16 with seed 2." in note


def test_interrupted_trials_are_excluded_with_a_reason(tmp_path: Path) -> None:
    folder = ablation_folder(tmp_path / "study")
    trials = pd.read_csv(folder / "trials.csv")
    trials.loc[17, ["status", "test_map_at_r"]] = ["interrupted", math.nan]
    trials.to_csv(folder / "trials.csv", index=False)
    out = build_report(folder)
    excluded = pd.read_csv(folder / "report_excluded.csv")
    assert excluded["reason"].tolist() == ["the study stopped before this trial finished"]
    assert "1 interrupted trial is left out of the statistics" in out.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("environment", "seconds"),
    [
        ({"started": "2025-11-26T03:00:00+00:00", "finished": "2025-11-26T03:30:00+00:00"}, 1800),
        ({"start_time": 100.0, "end_time": 160.0}, 60),
        ({"started": "2025-11-26T03:00:00+00:00", "study_wall_s": 42.0}, 42),
        ({"started": "2025-11-26T03:00:00+00:00"}, math.nan),
    ],
)
def test_study_wall_time(environment: dict, seconds: float) -> None:
    assert study_wall_time(environment) == pytest.approx(seconds, nan_ok=True)


def test_settings_keep_their_text_and_match_the_baseline(tmp_path: Path) -> None:
    folder = ablation_folder(
        tmp_path / "study",
        knob="optim.lr",
        effects={"0.0001": 0.0, "0.001": 0.02, "0.01": -0.01},
        baseline=1e-3,
    )
    results = load_results(folder)
    assert setting_order(results) == ["0.0001", "0.001", "0.01"]
    assert baseline_setting(results) == "0.001"
    values = setting_values(results.trials)
    assert axis_kind([values[setting] for setting in setting_order(results)]) == "log"


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        ([0, 1, 2, 16], "linear"),
        ([1, 2.5, 4], "linear"),
        ([1, 100], "log"),
        ([1e-4, 1e-2], "log"),
        (["glow", "realnvp"], "category"),
        ([True, False], "category"),
        # Text that reads as numbers is a category when the setting's value is text.
        (["1", "100"], "category"),
    ],
)
def test_axis_kind(values: list, kind: str) -> None:
    assert axis_kind(values) == kind


# Figure data on fake tables.


@pytest.fixture(scope="module")
def ablation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ablation_folder(
        tmp_path_factory.mktemp("ablation") / "ablate_flow_depth",
        failed=[("2", 1, "Traceback (most recent call last):\n  ...\nRuntimeError: " + HOSTILE)],
        diverged=[("8", 0)],
        stopped_early=[("16", 2, 3)],
    )


def test_metric_data_has_one_point_per_usable_seed(ablation: Path) -> None:
    results = load_results(ablation)
    data = metric_by_setting_data(results)
    counts = data["points"].groupby("setting").size().to_dict()
    # 3 seeds each; 2 lost one failed seed, 8 one diverged seed; the stopped seed of 16 stays.
    assert counts == {"0": 3, "1": 3, "2": 2, "4": 3, "8": 2, "16": 3}
    summary = data["summary"].set_index("setting")
    trials = results.trials
    expected = trials[(trials["setting"] == "4")]["val_map_at_r"].mean()
    assert summary.loc["4", "mean"] == pytest.approx(expected)
    assert data["axis"] == "linear" and data["baseline"] == "0"
    stopped = data["points"][data["points"]["status"] == "stopped_early"]
    assert list(stopped["setting"]) == ["16"]


def test_comparison_data_leaves_failed_seeds_unpaired(ablation: Path) -> None:
    data = comparison_data(load_results(ablation))
    comparisons = data["comparisons"].set_index("setting")
    assert list(comparisons.index) == ["1", "2", "4", "8", "16"]
    assert comparisons.loc["2", "n_pairs"] == 2
    assert comparisons.loc["2", "note"] == stats.TOO_FEW_SEEDS
    assert sorted(data["pairs"].query("setting == '2'")["seed"]) == [0, 2]
    # The fake study's true effect of depth 4 is +0.035, which the paired t-interval covers.
    assert comparisons.loc["4", "ci_low"] < 0.035 < comparisons.loc["4", "ci_high"]


def test_learning_curves_flag_stopped_trials(ablation: Path) -> None:
    results = load_results(ablation)
    data = learning_curve_data(results)
    assert data["columns"] == ["val_map_at_r", "train_loss"]
    stops = data["stops"]
    stopped_id = results.trials.loc[results.trials["status"] == "stopped_early", "trial_id"].item()
    assert set(stops["trial_id"]) == {stopped_id}
    assert set(stops["epoch"]) == {3}
    curves = data["curves"]
    depth_16 = curves[(curves["column"] == "val_map_at_r") & (curves["setting"] == "16")]
    assert list(depth_16["n"]) == [3, 3, 3, 2, 2, 2]
    assert (depth_16["low"] <= depth_16["mean"]).all() and (
        depth_16["mean"] <= depth_16["high"]
    ).all()
    # Failed and diverged trials draw no curve.
    first_epoch = curves.query("column == 'val_map_at_r' and setting == '8' and epoch == 1")
    assert first_epoch["n"].item() == 2


def test_validation_and_test_side_by_side(ablation: Path) -> None:
    data = validation_test_data(load_results(ablation)).set_index(["split", "setting"])
    assert data.loc[("validation", "16"), "n"] == 3
    assert data.loc[("test", "16"), "n"] == 2  # the trial stopped early has no test score


def test_cost_sums_trial_and_gpu_time(ablation: Path) -> None:
    results = load_results(ablation)
    data = cost_data(results)
    assert data["totals"]["trials"] == 18
    assert data["totals"]["trial_time_s"] == pytest.approx(results.trials["time_total_s"].sum())
    assert data["totals"]["gpu_time_s"] == pytest.approx(0.25 * data["totals"]["trial_time_s"])
    assert data["totals"]["wall_time_s"] == pytest.approx(90 * 60)
    assert data["settings"]["trials"].tolist() == [3] * 6


def test_history_tracks_best_completed_value(tmp_path: Path) -> None:
    results = load_results(search_folder(tmp_path / "search"))
    history = history_data(results)
    completed = history["status"] == "completed"
    assert (
        history.loc[completed, "best_so_far"].tolist()
        == history.loc[completed, "value"].cummax().tolist()
    )
    assert history["best_so_far"].iloc[-1] == pytest.approx(history.loc[completed, "value"].max())


def test_optuna_study_rebuilt_from_tables(tmp_path: Path) -> None:
    results = load_results(search_folder(tmp_path / "search"))
    study = optuna_study(results)
    states = [trial.state.name for trial in study.trials]
    assert states.count("COMPLETE") == (results.trials["status"] == "completed").sum()
    assert states.count("PRUNED") == (results.trials["status"] == "stopped_early").sum()
    assert study.best_value == pytest.approx(
        results.trials.query("status == 'completed'")["val_map_at_r"].max()
    )
    assert study.best_trial.params["flow.family"] in ("glow", "realnvp")
    importances = param_importances(study)
    assert set(importances["PED-ANOVA"]) == set(results.study["search"])
    assert sum(importances["PED-ANOVA"].values()) == pytest.approx(1.0)


# The pretrained reference (reference.json).

# Depths 8 and 16 climb well beyond their seeds' spread over the last quarter of epochs; depth 2
# climbs by less than its spread; the other depths are flat there.
LATE_RISES = {"2": 0.001, "8": 0.05, "16": 0.08}


@pytest.fixture(scope="module")
def referenced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ablation_folder(
        tmp_path_factory.mktemp("referenced") / "ablate_flow_depth",
        late_rises=LATE_RISES,
        reference=pretrained_reference(map_at_r=0.30),
    )


def _chosen_test_mean(results: Results) -> float:
    """The test MAP@R of the depth with the best mean validation MAP@R (every trial completed)."""
    trials = results.trials
    chosen = trials.groupby("setting")["val_map_at_r"].mean().idxmax()
    return float(trials.loc[trials["setting"] == chosen, "test_map_at_r"].mean())


def test_reference_data_returns_the_reference_values(referenced: Path) -> None:
    results = load_results(referenced)
    assert results.reference is not None
    assert results.reference.model["backbone"] == "mobilenetv2_100"
    assert results.reference.metrics["test_recall_at_1"] == pytest.approx(0.30 + 0.25 - 0.03)
    assert reference_data(results) == pytest.approx({"validation": 0.30, "test": 0.27})
    assert reference_mismatches(results) == []


def test_no_reference_file_gives_no_reference(ablation: Path) -> None:
    results = load_results(ablation)
    assert results.reference is None and reference_data(results) is None
    assert training_gain(results) is None
    assert not any("reference" in note for note in results.notes)


def test_training_gain_uses_the_setting_chosen_on_validation(referenced: Path) -> None:
    results = load_results(referenced)
    gain = training_gain(results)
    expected = _chosen_test_mean(results)
    assert gain is not None and gain.metric == "map_at_r"
    assert gain.pretrained == pytest.approx(0.30 + TEST_SHIFT)
    assert gain.trained == pytest.approx(expected)
    assert gain.difference == pytest.approx(expected - 0.27) and gain.improves


@pytest.mark.parametrize(
    ("gain", "text", "tone"),
    [
        (
            TrainingGain("map_at_r", "max", 0.27, 0.3564),
            "Training adds +0.0864 MAP@R on unseen classes (test) over the pretrained "
            "backbone (0.2700 → 0.3564).",
            "good",
        ),
        (
            TrainingGain("map_at_r", "max", 0.40, 0.35),
            "Training loses 0.0500 MAP@R on unseen classes (test) against the pretrained "
            "backbone (0.4000 → 0.3500): the trained model is worse than no training.",
            "warn",
        ),
        (
            TrainingGain("nmi", "min", 0.50, 0.40),
            "Training lowers NMI on unseen classes (test) by 0.1000 from the pretrained "
            "backbone (0.5000 → 0.4000; lower is better).",
            "good",
        ),
        (
            TrainingGain("map_at_r", "max", math.nan, 0.35),
            "reference.json has no test_map_at_r: what training adds over the pretrained "
            "backbone on unseen classes is unknown.",
            "warn",
        ),
        (
            None,
            "This results folder has no pretrained reference (reference.json), so the report "
            "cannot say what training adds over the backbone as it is.",
            "plain",
        ),
    ],
)
def test_reference_sentence(gain: TrainingGain | None, text: str, tone: str) -> None:
    sentence = reference_sentence(gain)
    assert sentence.text == text and sentence.tone == tone


def test_settings_table_has_the_reference_row(referenced: Path) -> None:
    results = load_results(referenced)
    table = settings_table(
        validation_test_data(results),
        reference=reference_data(results),
        still_improving=still_improving_data(results),
    )
    assert list(table["setting"]) == [REFERENCE_ROW, "0", "1", "2", "4", "8", "16"]
    first = table.iloc[0]
    assert first["val_mean"] == pytest.approx(0.30) and first["test_mean"] == pytest.approx(0.27)
    empty = ["val_n", "val_ci_low", "val_ci_high", "test_n", "test_ci_low", "test_ci_high"]
    assert first[empty].isna().all()
    assert list(table["val_n"][1:]) == [3] * 6
    assert list(table["still improving"]) == ["", "no", "no", "no", "no", "yes", "yes"]


def test_reference_lines_in_the_figure_data(referenced: Path, ablation: Path) -> None:
    results = load_results(referenced)

    def lines(figure) -> dict[str, list[float]]:
        return {
            trace.name: list(trace.y)
            for trace in figure.data
            if trace.name and trace.name.startswith(REFERENCE_LABEL) and trace.line.dash == "dash"
        }

    metric = draw_metric_by_setting(metric_by_setting_data(results))
    assert lines(metric) == {REFERENCE_LABEL: pytest.approx([0.30, 0.30])}
    validation_test = draw_validation_test(
        validation_test_data(results), results.metric, results.knob, reference_data(results)
    )
    assert lines(validation_test) == {
        f"{REFERENCE_LABEL} (validation)": pytest.approx([0.30, 0.30]),
        f"{REFERENCE_LABEL} (test)": pytest.approx([0.27, 0.27]),
    }
    history = draw_history(history_data(results), results.metric, 0.30)
    assert lines(history) == {REFERENCE_LABEL: pytest.approx([0.30, 0.30])}
    without = draw_metric_by_setting(metric_by_setting_data(load_results(ablation)))
    assert lines(without) == {}


def test_report_with_a_reference(referenced: Path) -> None:
    out = build_report(referenced)
    rest = _without_plotly(out.read_text(encoding="utf-8"))
    assert "could not be drawn" not in rest
    assert (
        rest.count('class="plotly-graph-div"') == 7
    )  # metric, comparison, per class, validation-test, curves, quality-cost, cost
    chosen = _chosen_test_mean(load_results(referenced))
    assert chosen - 0.27 > 0
    assert (
        f"Training adds {chosen - 0.27:+.4f} MAP@R on unseen classes (test) over the "
        f"pretrained backbone (0.2700 → {chosen:.4f})." in rest
    )
    assert f"<td>{REFERENCE_ROW}</td>" in rest
    for name in (REFERENCE_LABEL, f"{REFERENCE_LABEL} (validation)", f"{REFERENCE_LABEL} (test)"):
        assert f'"name":"{name}"' in rest, name
    assert "<h3>Pretrained reference (reference.json)</h3>" in rest
    settings = pd.read_csv(referenced / "report_settings.csv", dtype={"setting": str})
    first = settings.iloc[0]
    assert first["setting"] == REFERENCE_ROW
    assert first["val_mean"] == pytest.approx(0.30) and first["test_mean"] == pytest.approx(0.27)
    assert math.isnan(first["val_n"]) and math.isnan(first["test_ci_low"])
    # The still-improving flag: summary, settings table, learning curves.
    assert (
        "Still improving at the last epoch: flow.depth = 8, flow.depth = 16 — their budgets have "
        "not converged; compare them with care or raise train.epochs." in rest
    )
    assert settings.set_index("setting").loc[["8", "16"], "still improving"].tolist() == [
        "yes",
        "yes",
    ]
    assert '"name":"flow.depth = 16 (still improving)"' in rest
    assert '"name":"flow.depth = 2 (still improving)"' not in rest
    assert (referenced / "report_still_improving.csv").is_file()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "is not readable JSON"),
        ("[0.31, 0.33]", "must hold a JSON object, not list"),
        ('{"description": "no metrics"}', "has no 'metrics' object"),
        ('{"metrics": {"val_map_at_r": "high"}}', "metrics['val_map_at_r'] is 'high'"),
        ('{"metrics": {"val_map_at_r": 0.3}, "model": "mobilenet"}', "'model' must be"),
    ],
)
def test_malformed_reference_is_a_note(tmp_path: Path, content: str, problem: str) -> None:
    folder = ablation_folder(tmp_path / "study", effects={"0": 0.0, "1": 0.01}, seeds=2)
    (folder / "reference.json").write_text(content, encoding="utf-8")
    results = load_results(folder)
    assert results.reference is None
    [note] = [note for note in results.notes if "reference.json" in note]
    assert note.startswith(str(folder / "reference.json")) and problem in note


def test_report_builds_with_a_malformed_reference(tmp_path: Path) -> None:
    folder = ablation_folder(tmp_path / "study", effects={"0": 0.0, "1": 0.01}, seeds=2)
    (folder / "reference.json").write_text("{not json", encoding="utf-8")
    [note] = load_results(folder).notes
    page = build_report(folder).read_text(encoding="utf-8")
    assert f'<div class="notes"><p>{escape(note)}</p></div>' in page
    assert "The report leaves the pretrained reference out." in note
    assert "This results folder has no pretrained reference (reference.json)" in page
    assert "could not be drawn" not in page


def test_reference_of_another_backbone_is_noted(tmp_path: Path) -> None:
    reference = pretrained_reference()
    reference["model"]["backbone"] = "resnet50"
    folder = ablation_folder(
        tmp_path / "study", effects={"0": 0.0, "1": 0.01}, seeds=2, reference=reference
    )
    results = load_results(folder)
    assert reference_mismatches(results) == [
        "model.backbone is 'resnet50' in reference.json but 'mobilenetv2_100' here"
    ]


# Still improving at the last epoch.


def test_still_improving_flags_the_settings_rising_more_than_their_spread(
    referenced: Path,
) -> None:
    results = load_results(referenced)
    table = still_improving_data(results)
    assert flagged_settings(table) == ["8", "16"]
    rows = table.set_index("setting")
    spreads = results.trials.groupby("setting")["val_map_at_r"].std(ddof=1)
    for setting in ("0", "1", "2", "4", "8", "16"):
        assert rows.loc[setting, "seeds"] == 3
        assert rows.loc[setting, "rise"] == pytest.approx(LATE_RISES.get(setting, 0.0), abs=1e-12)
        assert rows.loc[setting, "spread"] == pytest.approx(spreads[setting])
    # Depth 2 climbs, but by less than its seeds spread apart.
    assert 0 < rows.loc["2", "rise"] < rows.loc["2", "spread"]
    assert rows.loc["2", "verdict"] == "no" and rows.loc["8", "verdict"] == "yes"


def test_still_improving_leaves_out_unfinished_trials(ablation: Path) -> None:
    table = still_improving_data(load_results(ablation))
    # Flat last quarters: nothing flagged. The failed (2), diverged (8) and stopped (16) seeds
    # did not reach their budget and do not count.
    assert flagged_settings(table) == []
    assert table.set_index("setting")["seeds"].to_dict() == {
        "0": 3,
        "1": 3,
        "2": 2,
        "4": 3,
        "8": 2,
        "16": 2,
    }


def test_one_seed_cannot_tell(tmp_path: Path) -> None:
    folder = ablation_folder(
        tmp_path / "study", effects={"0": 0.0, "8": 0.03}, seeds=1, late_rises={"8": 0.05}
    )
    results = load_results(folder)
    table = still_improving_data(results)
    assert flagged_settings(table) == []
    assert table.set_index("setting").loc["8", "rise"] == pytest.approx(0.05)
    assert list(table["verdict"]) == [ONE_SEED, ONE_SEED]
    settings = settings_table(validation_test_data(results), still_improving=table)
    assert list(settings["still improving"]) == [ONE_SEED, ONE_SEED]


def test_late_rise_compares_the_last_epoch_with_a_quarter_before() -> None:
    # E = 5: ceil(5 / 4) = 2, so epoch 5 against epoch 3: 0.42 - 0.30 = 0.12. Trial b has 3
    # epochs, too few to tell.
    epochs = pd.DataFrame(
        {
            "trial_id": ["a"] * 5 + ["b"] * 3,
            "epoch": [1, 2, 3, 4, 5, 1, 2, 3],
            "val_map_at_r": [0.10, 0.20, 0.30, 0.35, 0.42, 0.10, 0.20, 0.30],
        }
    )
    rises = late_rises(epochs, "val_map_at_r").set_index("trial_id")
    assert rises.loc["a", "rise"] == pytest.approx(0.12)
    assert rises.loc["a", "final"] == pytest.approx(0.42) and rises.loc["a", "epochs"] == 5
    assert math.isnan(rises.loc["b", "rise"]) and rises.loc["b", "epochs"] == 3


@pytest.mark.parametrize(("mode", "flagged"), [("max", ["up"]), ("min", ["down"])])
def test_still_improving_follows_the_mode(mode: str, flagged: list[str]) -> None:
    # up: rises 0.05 and 0.07 (mean 0.06); finals 0.50 and 0.52, sample sd 0.02 / sqrt(2) =
    # 0.014142. down: the mirror image, falling. flat: mean rise 0.001, below its spread.
    rises = pd.DataFrame(
        [
            ("up", 0.50, 0.05),
            ("up", 0.52, 0.07),
            ("down", 0.30, -0.05),
            ("down", 0.32, -0.07),
            ("flat", 0.40, 0.0),
            ("flat", 0.42, 0.002),
            ("single", 0.40, 0.30),
            ("short", 0.40, math.nan),
        ],
        columns=["setting", "final", "rise"],
    )
    settings = ["up", "down", "flat", "single", "short", "none"]
    table = still_improving(rises, settings, mode)
    assert flagged_settings(table) == flagged
    rows = table.set_index("setting")
    assert rows.loc["up", "rise"] == pytest.approx(0.06)
    assert rows.loc["up", "spread"] == pytest.approx(0.014142, abs=1e-6)
    assert rows.loc["single", "verdict"] == ONE_SEED and not rows.loc["single", "still_improving"]
    assert rows.loc["short", "verdict"] == TOO_SHORT
    assert rows.loc["none", "verdict"] == "" and rows.loc["none", "seeds"] == 0


def test_still_improving_sentence_names_the_settings() -> None:
    assert still_improving_sentence([], "flow.depth") is None
    one = still_improving_sentence(["8"], "flow.depth")
    assert one is not None and one.tone == "warn"
    assert one.text == (
        "Still improving at the last epoch: flow.depth = 8 — its budget has not converged; "
        "compare it with care or raise train.epochs."
    )


# Escaping.


def test_figures_escape_labels(tmp_path: Path) -> None:
    folder = ablation_folder(tmp_path / "study", effects={"0": 0.0, HOSTILE: 0.02}, seeds=3)
    results = load_results(folder)
    figures = [
        draw_metric_by_setting(metric_by_setting_data(results)),
        draw_comparison(comparison_data(results)),
        draw_learning_curves(learning_curve_data(results)),
    ]
    text = json.dumps([figure.to_plotly_json() for figure in figures], default=str)
    assert "<script" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = ablation_folder(
        tmp_path_factory.mktemp("hostile") / "study",
        effects={"0": 0.0, "1": 0.01, HOSTILE: 0.02},
        failed=[("1", 0, HOSTILE)],
        reference=pretrained_reference(),
    )
    return build_report(folder)


def test_report_escapes_errors_and_labels(hostile_report: Path) -> None:
    page = hostile_report.read_text(encoding="utf-8")
    assert HOSTILE not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


QUOTED = 'say "hi" & <b>'


def _plotly_calls(page: str) -> list[str]:
    """The script of every figure on a page: the JSON handed to Plotly.newPlot."""
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", _without_plotly(page), flags=re.S)
    return [script for script in scripts if "Plotly.newPlot(" in script]


def test_plot_labels_keep_their_quotes_and_are_escaped_once(tmp_path: Path) -> None:
    # plotly.js decodes &amp; &lt; &gt; but shows &quot; as it is written.
    folder = ablation_folder(tmp_path / "study", effects={"0": 0.0, QUOTED: 0.02}, seeds=3)
    results = load_results(folder)
    figure = draw_metric_by_setting(metric_by_setting_data(results))
    labels = {x for trace in figure.data for x in (trace.x if trace.x is not None else ())}
    assert 'say "hi" &amp; &lt;b&gt;' in labels
    calls = _plotly_calls(build_report(folder).read_text(encoding="utf-8"))
    assert len(calls) == 7
    for call in calls:
        assert "&quot;" not in call and "&amp;quot;" not in call and "&amp;amp;" not in call
    assert any('say \\"hi\\" &amp; &lt;b&gt;' in call for call in calls)


def test_search_plot_labels_keep_their_quotes(tmp_path: Path) -> None:
    folder = search_folder(tmp_path / "search")
    study = json.loads((folder / "study.json").read_text(encoding="utf-8"))
    study["search"]["flow.family"]["values"] = ['gl"ow', "real&nvp"]
    study["search"]['lr "x"'] = study["search"].pop("optim.lr")
    (folder / "study.json").write_text(json.dumps(study), encoding="utf-8")
    trials = pd.read_csv(folder / "trials.csv", dtype=str, keep_default_na=False)
    trials["config/flow.family"] = trials["config/flow.family"].map(
        {"glow": 'gl"ow', "realnvp": "real&nvp"}
    )
    trials.rename(columns={"config/optim.lr": 'config/lr "x"'}).to_csv(
        folder / "trials.csv", index=False
    )
    page = build_report(folder).read_text(encoding="utf-8")
    assert "could not be drawn" not in _without_plotly(page)
    calls = _plotly_calls(page)
    assert len(calls) == 7
    for call in calls:
        assert "&quot;" not in call and "&amp;quot;" not in call and "&amp;amp;" not in call
    (slice_plot,) = [call for call in calls if '"figure-slice"' in call]
    assert 'lr \\"x\\"' in slice_plot and 'gl\\"ow' in slice_plot and "real&amp;nvp" in slice_plot


# Whole reports.


def _without_plotly(page: str) -> str:
    return page.replace(get_plotlyjs(), "")


def test_ablation_report(ablation: Path, tmp_path: Path) -> None:
    out = build_report(ablation)
    assert out == ablation / "report.html"
    for name in ("trials", "settings", "comparisons", "seeds", "curves", "cost", "excluded"):
        assert (ablation / f"report_{name}.csv").is_file(), name
    for name in ("class_differences", "class_concentration"):
        assert (ablation / f"report_{name}.csv").is_file(), name
    page = out.read_text(encoding="utf-8")
    assert page.count(get_plotlyjs()) == 1
    rest = _without_plotly(page)
    assert 'src="' not in rest and "<link" not in rest
    assert rest.count('class="plotly-graph-div"') == 7
    assert "Best setting: flow.depth = 4" in rest
    assert "too few seeds for a test" in rest
    assert "could not be drawn" not in rest
    assert "2 failed or diverged trials are left out of the statistics" in rest
    # No reference.json: one plain line says so, and no figure or table shows a reference.
    assert "This results folder has no pretrained reference (reference.json)" in rest
    assert REFERENCE_ROW not in rest and REFERENCE_LABEL not in rest
    assert "Still improving at the last epoch" not in rest
    excluded = pd.read_csv(ablation / "report_excluded.csv")
    assert sorted(excluded["status"]) == ["diverged", "failed"]
    comparisons = pd.read_csv(ablation / "report_comparisons.csv")
    assert set(comparisons["test"]) == {stats.PAIRED_T, stats.NO_TEST}


def test_compare_report_with_wilcoxon(tmp_path: Path) -> None:
    folder = ablation_folder(
        tmp_path / "compare",
        kind="compare",
        effects={"gapan": 0.0, "proxy_anchor": -0.02, "triplet": -0.04},
        baseline="gapan",
        seeds=8,
    )
    out = build_report(folder, tmp_path / "elsewhere" / "compare.html")
    assert out.is_file() and (out.parent / "compare_comparisons.csv").is_file()
    comparisons = pd.read_csv(out.parent / "compare_comparisons.csv")
    assert list(comparisons["test"]) == [stats.WILCOXON, stats.WILCOXON]
    assert comparisons["significant"].all()
    page = out.read_text(encoding="utf-8")
    assert "The baseline method = gapan is the best setting." in page


def test_search_report(tmp_path: Path) -> None:
    folder = search_folder(tmp_path / "search", reference=pretrained_reference(map_at_r=0.20))
    out = build_report(folder)
    for name in ("trials", "history", "importances", "cost", "excluded"):
        assert (folder / f"report_{name}.csv").is_file(), name
    rest = _without_plotly(out.read_text(encoding="utf-8"))
    assert "could not be drawn" not in rest
    for div in ("history", "importances", "parallel-coordinate", "slice", "intermediate-values"):
        assert f'id="figure-{div}"' in rest
    results = load_results(folder)
    best = results.trials.query("status == 'completed'")["val_map_at_r"].max()
    assert f"Best val_map_at_r = {best:.4f}" in rest
    assert "CUDA out of memory" in rest
    # The best trial by validation, against the reference's test MAP@R of 0.20 - 0.03.
    completed = results.trials.query("status == 'completed'")
    chosen_test = completed.loc[completed["val_map_at_r"].idxmax(), "test_map_at_r"]
    assert (
        f"Training adds {chosen_test - 0.17:+.4f} MAP@R on unseen classes (test) over the "
        f"pretrained backbone (0.1700 → {chosen_test:.4f})." in rest
    )
    assert f'"name":"{REFERENCE_LABEL}"' in rest


def test_command_line(ablation: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "page.html"
    assert main([str(ablation), "--out", str(out)]) == 0
    assert out.is_file() and (tmp_path / "page_trials.csv").is_file()
    assert main([str(tmp_path)]) == 2
    assert "study.json is missing" in capsys.readouterr().err


def test_report_files_are_replaced_whole_never_rewritten_in_place(tmp_path: Path) -> None:
    # A second name (a hard link) of each file keeps what it held: the rebuild wrote new files
    # beside them and renamed them over, so a reader never sees a part of one.
    folder = ablation_folder(tmp_path / "study")
    build_report(folder)
    written = sorted(folder.glob("report*"))
    assert len(written) == 13
    kept = tmp_path / "kept"
    kept.mkdir()
    before = {}
    for path in written:
        os.link(path, kept / path.name)
        before[path.name] = path.read_bytes()
    trials = pd.read_csv(folder / "trials.csv", dtype=str, keep_default_na=False)
    trials.iloc[:-1].to_csv(folder / "trials.csv", index=False)
    build_report(folder)
    for path in written:
        assert (kept / path.name).read_bytes() == before[path.name], path.name
        assert not path.samefile(kept / path.name), path.name
    assert (folder / "report_trials.csv").read_bytes() != before["report_trials.csv"]
    assert not [path.name for path in folder.iterdir() if path.name.startswith(".")]


HOSTILE_CELLS = ('=HYPERLINK("http://x","y")', "@SUM(A1:A9)", "+1+2", "-2+3", "\tcmd", "\rcmd")


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        *[(cell, "'" + cell) for cell in HOSTILE_CELLS],
        ("-", "'-"),
        ("-1", "-1"),
        ("+1e-3", "+1e-3"),
        ("-0.25", "-0.25"),
        ("plain text", "plain text"),
        (-0.5, -0.5),
    ],
)
def test_spreadsheet_cell(cell: object, written: object) -> None:
    assert spreadsheet_cell(cell) == written


def test_report_tables_defuse_spreadsheet_formulas_and_keep_numbers(tmp_path: Path) -> None:
    folder = ablation_folder(
        tmp_path / "study",
        knob="prior.shift",
        effects={"-1": 0.0, "0": -0.01, "1": -0.02},
        baseline=-1,
        seeds=6,
        failed=[("0", seed, cell) for seed, cell in enumerate(HOSTILE_CELLS[:4])]
        + [("1", seed, cell) for seed, cell in enumerate(HOSTILE_CELLS[4:])],
    )
    build_report(folder)
    excluded = pd.read_csv(folder / "report_excluded.csv", dtype=str, keep_default_na=False)
    assert sorted(excluded["reason"]) == sorted("'" + cell for cell in HOSTILE_CELLS)
    settings = pd.read_csv(folder / "report_settings.csv")
    assert -1 in set(settings["setting"])  # a negative setting stays a number
    comparisons = pd.read_csv(folder / "report_comparisons.csv")
    assert pd.api.types.is_float_dtype(comparisons["mean_difference"])
    assert (comparisons["mean_difference"] < 0).all()
    for table in folder.glob("report_*.csv"):
        with table.open(newline="", encoding="utf-8") as file:
            for row in csv.reader(file):
                for cell in row:
                    if cell.startswith(FORMULA_STARTS):
                        assert re.fullmatch(r"[+-][\d.eE+-]+", cell), (table.name, cell)


def test_reports_import_neither_torch_nor_ray() -> None:
    code = (
        "import sys, reports, reports.__main__; "
        "print([name for name in ('torch', 'ray') if name in sys.modules])"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_usable_trials_leave_out_failures(ablation: Path) -> None:
    results = load_results(ablation)
    assert set(usable_trials(results)["status"]) == {"completed", "stopped_early"}


# The page in a real browser.


class _RenderedPage(HTMLParser):
    """Reads a dumped DOM: whether every plotly figure holds an svg, the recorded script
    errors, and the text of every script element."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[bool] = []
        self.figure_ids: list[str | None] = []
        self.depth = 0
        self.error_count: str | None = None
        self.scripts: list[str] = []
        self.text: list[str] = []
        self.first_cells: list[str] = []
        self._in_script = False
        self._row_start = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag == "script":
            self._in_script = True
            self.scripts.append("")
        if tag == "tr":
            self._row_start = True
        elif tag == "td" and self._row_start:
            self.first_cells.append("")
        if attributes.get("id") == "script-errors":
            self.error_count = attributes.get("data-count")
        if self.depth:
            self.depth += tag == "div"
            if tag == "svg" and "main-svg" in classes:
                self.figures[-1] = True
        elif tag == "div" and "plotly-graph-div" in classes:
            self.figures.append(False)
            self.figure_ids.append(attributes.get("id"))
            self.depth = 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False
        if tag in ("td", "th"):
            self._row_start = False
        if self.depth and tag == "div":
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data
        else:
            self.text.append(data)
        if self._row_start and self.first_cells:
            self.first_cells[-1] += data


def _render(page: Path, profile: Path) -> _RenderedPage:
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=True)
    rendered = _RenderedPage()
    rendered.feed(done.stdout)
    return rendered


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")
def test_pages_render_in_a_browser(hostile_report: Path, tmp_path: Path) -> None:
    search = search_folder(tmp_path / "search", reference=pretrained_reference())
    search_page = build_report(search)
    for page, figures in ((hostile_report, 7), (search_page, 7)):
        profile = tmp_path / f"profile-{page.parent.name}"
        rendered = _render(page, profile)
        shutil.rmtree(profile, ignore_errors=True)
        assert rendered.error_count == "0", page
        assert len(rendered.figures) == figures, page
        assert all(rendered.figures), f"a figure of {page} did not render"
        assert not any(script.strip() == "alert(1)" for script in rendered.scripts)
        if page == hostile_report:
            # The hostile label and error show as literal text.
            text = " ".join(rendered.text)
            assert HOSTILE in "".join(rendered.text)
            # Both interval kinds, drawn and in the tables, and the per-class figure.
            drawn = dict(zip(rendered.figure_ids, rendered.figures, strict=True))
            assert drawn["figure-comparison"] and drawn["figure-class-differences"]
            assert f"95% interval {stats.OVER_SEEDS_AND_CLASSES}" in text
            assert f"high ({stats.OVER_SEEDS})" in text
            assert f"high ({stats.OVER_SEEDS_AND_CLASSES})" in text


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")
def test_table_sorts_on_header_click(tmp_path: Path) -> None:
    table = table_html(
        pd.DataFrame({"name": ["b", "a", "c", "d"], "value": [10.0, 2.0, math.nan, 9.5]}),
        sortable=True,
    )
    click = "document.querySelectorAll('table.sortable th')[1].click();"
    page = tmp_path / "sort.html"
    page.write_text(
        f"<!DOCTYPE html><html><body>{table}<script>{TABLE_SORT}</script>"
        f"<script>{click}</script></body></html>",
        encoding="utf-8",
    )
    rendered = _render(page, tmp_path / "profile")
    # Ascending by value (2, 9.5, 10); the empty value last.
    assert rendered.first_cells == ["a", "d", "b", "c"]


def test_quality_against_cost_marks_the_settings_no_other_beats_on_both(tmp_path) -> None:
    from reports.figures import quality_cost_data

    folder = ablation_folder(
        tmp_path / "study", effects={"0": 0.0, "1": 0.02, "2": -0.01, "4": 0.03, "8": 0.01}
    )
    data = quality_cost_data(load_results(folder))
    assert list(data["label"]) == ["0", "1", "2", "4", "8"] and (data["trials"] == 3).all()
    for _, row in data.iterrows():
        beaten = (
            (data["metric"] >= row["metric"])
            & (data["cost"] <= row["cost"])
            & ((data["metric"] > row["metric"]) | (data["cost"] < row["cost"]))
        )
        assert row["non_dominated"] == (not beaten.any())
    assert data["non_dominated"].any() and not data["non_dominated"].all()
    html = build_report(folder).read_text()
    assert "could not be drawn" not in html
    assert "figure-quality-cost" in html and "ms per step" in html


def test_comparisons_on_test_are_reported_beside_validation_never_instead(tmp_path) -> None:
    folder = ablation_folder(tmp_path / "study", effects={"0": 0.0, "2": 0.03, "4": -0.02})
    results = load_results(folder)
    validation = comparison_data(results)
    test = comparison_data(results, "test_map_at_r")
    assert test["metric"] == "test_map_at_r" and validation["metric"] == "val_map_at_r"
    differences = test["pairs"].groupby("setting")["difference"].mean()
    trials = results.trials
    for setting in ("2", "4"):
        own = trials[trials["setting"] == setting].set_index("seed")["test_map_at_r"]
        base = trials[trials["setting"] == "0"].set_index("seed")["test_map_at_r"]
        assert differences[setting] == pytest.approx((own - base).mean())
    html = build_report(folder).read_text()
    assert "on the unseen test classes (test_map_at_r)" in html
    assert (folder / "report_test_comparisons.csv").exists()


def test_comparisons_print_as_markdown_with_both_intervals(tmp_path: Path, capsys) -> None:
    # The test classes of setting 1 carry an effect in one class only: over seeds it is
    # significant, over classes it is not.
    folder = ablation_folder(
        tmp_path / "study",
        effects={"0": 0.0, "1": 0.026, "2": 0.0},
        seeds=5,
        noise=0.001,
        class_effects={"1": {0: 0.3}},
    )
    assert main([str(folder), "--markdown", "--equivalence-margin", "0.02"]) == 0
    printed = capsys.readouterr().out
    validation, test = printed.split("\n\nablate_flow_depth: ")[1:]
    assert validation.startswith("val_map_at_r minus flow.depth = 0")
    header = (
        "| setting | seeds | difference | 95% over seeds | Holm p | 95% over seeds and classes |"
    )
    assert header in test
    rows = {line.split(" | ")[0].strip("| "): line for line in test.splitlines()[4:]}
    assert rows["1"].endswith(f"| {stats.SEEDS_ONLY} |")
    assert rows["2"].endswith("| equivalent within ±0.02 |")
    comparisons = pd.read_csv(folder / "report_test_comparisons.csv")
    one = comparisons.set_index("setting").loc[1]
    assert one["significant_over_seeds"] and not one["significant"]
