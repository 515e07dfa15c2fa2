"""Metric values a results table cannot hold: a score outside [0, 1], a negative cost, anything
not finite. Each is named in a note (file, line, trial, column, value) and left out of every
statistic as an empty cell is, the rest of its row kept; an empty cell is a value the trial did
not report, and gets no note.

Each test writes two copies of one fake study: the impossible values in one, the same cells
left empty in the other, and the report must compute the same from both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import pytest
from fake_results import ablation_folder

from reports import load_results
from reports.__main__ import main
from reports.figures import (
    cost_data,
    learning_curve_data,
    per_class_values,
    validation_test_data,
)
from reports.load import Results, usable_trials, value_range

ROW = 4  # flow.depth = 1 with seed 1, on line 6 of trials.csv
TRIAL = "train_5f3a1_00004"

Cells = Mapping[tuple[int, str], str]  # (row, column) -> the text written there


def _write_cells(path: Path, cells: Cells) -> None:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    for (row, column), text in cells.items():
        table.loc[row, column] = text
    table.to_csv(path, index=False)


def _twins(
    tmp_path: Path, file: str, impossible: Cells, valid: Cells | None = None, **study
) -> tuple[Results, Results]:
    """The same fake study twice: `impossible` written into `file` of the first, those cells
    left empty in the second; `valid` written into both."""
    loaded = []
    for name, cells in (("damaged", impossible), ("blank", dict.fromkeys(impossible, ""))):
        folder = ablation_folder(tmp_path / name, **study)
        _write_cells(folder / file, {**(valid or {}), **cells})
        loaded.append(load_results(folder))
    return loaded[0], loaded[1]


def _folder_with(tmp_path: Path, file: str, cells: Cells) -> Path:
    """One fake study with `cells` written into `file`."""
    folder = ablation_folder(tmp_path / "study")
    _write_cells(folder / file, cells)
    return folder


def _notes_of(results: Results, *kinds: str) -> list[str]:
    """The notes that say one of `kinds` (a folder's name, which holds the test's, aside)."""
    folder = str(results.directory)
    return [
        note for note in results.notes if any(kind in note.replace(folder, "") for kind in kinds)
    ]


def _impossible_note(results: Results) -> str:
    (note,) = _notes_of(results, "impossible value")
    return note


def _other_notes(results: Results) -> list[str]:
    return _notes_of(results, "impossible value", "malformed")


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        ("val_map_at_r", (0.0, 1.0)),
        ("test_r_precision", (0.0, 1.0)),
        ("val_recall_at_16", (0.0, 1.0)),
        ("test_precision_at_5", (0.0, 1.0)),
        ("val_nmi", (0.0, 1.0)),
        ("map_at_r", (0.0, 1.0)),  # class_scores.csv
        ("time_per_step_s", (0.0, math.inf)),
        ("time_per_epoch_s", (0.0, math.inf)),
        ("time_total_s", (0.0, math.inf)),
        ("gpu_time_s", (0.0, math.inf)),
        ("peak_gpu_memory_mb", (0.0, math.inf)),
        ("time_this_epoch_s", (0.0, math.inf)),
        ("train_loss", (-math.inf, math.inf)),
        ("train_nll", (-math.inf, math.inf)),
        ("seed", None),
        ("epoch", None),
        ("lr", None),
        ("queries", None),
        ("gpus", None),
    ],
)
def test_each_metric_column_has_its_range(
    column: str, expected: tuple[float, float] | None
) -> None:
    allowed = value_range(column)
    assert (None if allowed is None else (allowed.low, allowed.high)) == expected


@pytest.mark.parametrize(
    ("column", "text"),
    [
        ("val_map_at_r", "-5"),
        ("val_map_at_r", "1.5"),
        ("val_map_at_r", "inf"),
        ("val_map_at_r", "-inf"),
        ("val_map_at_r", "1e999"),
        ("val_map_at_r", "nan"),
        ("test_map_at_r", "1.5"),
        ("val_r_precision", "-0.25"),
    ],
)
def test_an_impossible_score_is_named_and_left_out_of_the_intervals(
    tmp_path: Path, column: str, text: str
) -> None:
    damaged, blank = _twins(tmp_path, "trials.csv", {(ROW, column): text})
    # The report's means and intervals are those without the value, over one seed fewer.
    summary = validation_test_data(damaged)
    pd.testing.assert_frame_equal(summary, validation_test_data(blank))
    if column in (damaged.metric, damaged.test_metric):
        split = "validation" if column == damaged.metric else "test"
        counts = summary.set_index(["split", "setting"])["n"]
        assert counts[(split, "1")] == 2 and counts[(split, "2")] == 3
    # The value alone is left out: the trial and the rest of its row stand.
    pd.testing.assert_frame_equal(damaged.trials, blank.trials)
    assert len(damaged.trials) == 18 and TRIAL in set(damaged.trials["trial_id"])
    note = _impossible_note(damaged)
    path = damaged.directory / "trials.csv"
    assert note.startswith(f"{path}: 1 impossible value left out of this report")
    assert f"line 6 (trial {TRIAL}): {column} is {text!r}, not a score in [0, 1]" in note
    assert not _notes_of(damaged, "malformed", "planned")
    assert not _other_notes(blank)


@pytest.mark.parametrize(
    ("column", "text"),
    [
        ("val_map_at_r", "1.0000000000000004"),  # sklearn's NMI of a perfect clustering
        ("val_map_at_r", "0"),
        ("val_map_at_r", "-0.0"),
        ("test_map_at_r", "1"),
        ("time_per_step_s", "0"),
    ],
)
def test_a_bound_or_a_rounding_past_it_is_a_value(tmp_path: Path, column: str, text: str) -> None:
    results = load_results(_folder_with(tmp_path, "trials.csv", {(ROW, column): text}))
    assert not _other_notes(results)
    assert results.trials.set_index("trial_id").at[TRIAL, column] == float(text)


@pytest.mark.parametrize("column", ["time_per_step_s", "time_total_s", "gpu_time_s"])
def test_a_negative_cost_is_named_and_left_out(tmp_path: Path, column: str) -> None:
    damaged, blank = _twins(tmp_path, "trials.csv", {(ROW, column): "-0.5"})
    pd.testing.assert_frame_equal(damaged.trials, blank.trials)
    assert math.isnan(damaged.trials.set_index("trial_id").at[TRIAL, column])
    for part in ("trials", "settings"):
        pd.testing.assert_frame_equal(cost_data(damaged)[part], cost_data(blank)[part])
    assert cost_data(damaged)["totals"] == pytest.approx(cost_data(blank)["totals"], nan_ok=True)
    # Its retrieval scores still count.
    assert TRIAL in set(usable_trials(damaged)["trial_id"])
    note = _impossible_note(damaged)
    assert f"line 6 (trial {TRIAL}): {column} is '-0.5', not a cost of 0 or more" in note


def test_empty_cells_are_not_reported_values_and_get_no_note(tmp_path: Path) -> None:
    # A failed trial (line 8) leaves its test scores empty, a diverged one (line 12) every
    # score, and so does the completed trial blanked on line 9; only line 6 is named.
    study = {"failed": [("2", 0, "CUDA out of memory")], "diverged": [("4", 1)]}
    empty = {(7, "val_map_at_r"): "", (7, "time_per_step_s"): ""}
    damaged, blank = _twins(tmp_path, "trials.csv", {(ROW, "val_map_at_r"): "-1"}, empty, **study)
    note = _impossible_note(damaged)
    assert ": 1 impossible value left out" in note and "line 6 " in note
    assert "line 8 " not in note and "line 9 " not in note and "line 12 " not in note
    assert not _other_notes(blank)
    trials = damaged.trials.set_index("trial_id")
    blanked, failed, diverged = (f"train_5f3a1_{number:05d}" for number in (7, 6, 10))
    assert trials.loc[[TRIAL, blanked, diverged], "val_map_at_r"].isna().all()
    assert trials.loc[[failed, diverged], "test_map_at_r"].isna().all()
    assert math.isnan(trials.at[blanked, "time_per_step_s"])


def test_a_row_left_out_is_named_once(tmp_path: Path) -> None:
    # Line 6 does not parse, so it is left out whole and named with the malformed rows only;
    # the impossible value on line 7 is the one named as impossible.
    cells = {(ROW, "seed"): "two", (ROW, "val_map_at_r"): "-5", (5, "val_map_at_r"): "-5"}
    results = load_results(_folder_with(tmp_path, "trials.csv", cells))
    (malformed,) = _notes_of(results, "malformed")
    assert f"line 6 (trial {TRIAL}): seed is 'two', not a number" in malformed
    note = _impossible_note(results)
    assert ": 1 impossible value left out" in note
    assert "line 7 (trial train_5f3a1_00005): val_map_at_r is '-5'" in note


def test_impossible_epoch_values_are_named_and_left_out_of_the_curves(tmp_path: Path) -> None:
    epochs = pd.read_csv(ablation_folder(tmp_path / "probe") / "epochs.csv")
    third = int(epochs.index[(epochs["trial_id"] == TRIAL) & (epochs["epoch"] == 3)][0])
    fourth = third + 1
    impossible = {
        (third, "val_map_at_r"): "1.5",
        (third, "train_loss"): "inf",
        (fourth, "time_this_epoch_s"): "-2",
    }
    valid = {(fourth, "train_nll"): "-0.3"}  # a loss may be negative
    damaged, blank = _twins(tmp_path, "epochs.csv", impossible, valid)
    pd.testing.assert_frame_equal(damaged.epochs, blank.epochs)
    assert damaged.epochs.set_index(["trial_id", "epoch"]).at[(TRIAL, 4), "train_nll"] == -0.3
    curves = learning_curve_data(damaged)["curves"]
    pd.testing.assert_frame_equal(curves, learning_curve_data(blank)["curves"])
    note = _impossible_note(damaged)
    assert note.startswith(f"{damaged.directory / 'epochs.csv'}: 3 impossible values left out")
    line = third + 2  # the header is line 1
    assert f"line {line} (trial {TRIAL}): val_map_at_r is '1.5', not a score in [0, 1]" in note
    assert f"line {line} (trial {TRIAL}): train_loss is 'inf', not a finite number" in note
    assert f"line {line + 1} (trial {TRIAL}): time_this_epoch_s is '-2', not a cost" in note
    assert "train_nll" not in note
    assert not _other_notes(blank)


def test_impossible_class_scores_are_named_and_left_out(tmp_path: Path) -> None:
    classes = pd.read_csv(ablation_folder(tmp_path / "probe") / "class_scores.csv")
    rows = classes.index[(classes["trial_id"] == TRIAL) & (classes["split"] == "val")]
    impossible = {(int(rows[0]), "map_at_r"): "-0.2", (int(rows[1]), "recall_at_1"): "nan"}
    damaged, blank = _twins(tmp_path, "class_scores.csv", impossible)
    assert damaged.classes is not None and blank.classes is not None
    pd.testing.assert_frame_equal(damaged.classes, blank.classes)
    values = per_class_values(damaged, usable_trials(damaged), "val_map_at_r")
    pd.testing.assert_frame_equal(
        values, per_class_values(blank, usable_trials(blank), "val_map_at_r")
    )
    note = _impossible_note(damaged)
    path = damaged.directory / "class_scores.csv"
    assert note.startswith(f"{path}: 2 impossible values left out")
    assert f"line {rows[0] + 2} (trial {TRIAL}): map_at_r is '-0.2', not a score" in note
    assert f"line {rows[1] + 2} (trial {TRIAL}): recall_at_1 is 'nan', not a score" in note
    assert not _other_notes(blank)


def test_the_report_warns_of_an_impossible_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder_with(tmp_path, "trials.csv", {(ROW, "val_map_at_r"): "-5"})
    assert main([str(folder)]) == 0
    printed = capsys.readouterr().err
    assert f"warning: {folder / 'trials.csv'}: 1 impossible value left out" in printed
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert f"line 6 (trial {TRIAL}): val_map_at_r is " in page and "not a score in [0, 1]" in page
