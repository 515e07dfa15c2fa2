"""A setting's one codec (gapan.results): written to trials.csv as text and as JSON, read back
with its type by the runner (gapan.tune.adaptive) and the reports alike, and read from the
text alone in a table written before the JSON column."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fake_results import ablation_folder

from gapan import results
from gapan.results import (
    SETTING,
    SETTING_VALUE,
    TRIALS_FILE,
    TrialRecord,
    read_setting,
    setting_json,
    setting_text,
    setting_values,
    write_tables,
)
from gapan.space import parse_space
from gapan.tune.adaptive import merge_rounds, setting_differences
from reports import build_report, load_results
from reports.figures import axis_kind, metric_by_setting_data
from reports.load import baseline_setting, same_setting, setting_order

VALUES = [0, 4, 16, 1e-05, 0.001, 1.0, 2.5, True, False, "gapan", "proxy_anchor", "1", "True"]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_a_setting_reads_back_as_the_value_written(value: Any) -> None:
    read = read_setting(setting_text(value), setting_json(value))
    assert read == value and type(read) is type(value)


def test_a_samplers_numpy_choice_is_written_as_the_python_value() -> None:
    for value, plain in ((np.int64(4), 4), (np.float64(0.5), 0.5), (np.bool_(True), True)):
        assert setting_text(value) == setting_text(plain)
        assert read_setting(setting_text(value), setting_json(value)) == plain


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("4", 4),
        ("16", 16),
        ("1.0", 1.0),
        ("1e-05", 1e-05),
        ("0.001", 0.001),
        ("True", True),
        ("false", False),
        ("glow", "glow"),
        ("proxy_anchor", "proxy_anchor"),
        ("", ""),
    ],
)
def test_a_table_without_the_value_column_is_read_from_the_text(text: str, value: Any) -> None:
    for stored in (None, "", float("nan")):  # no column; an empty cell, as text or as pandas'
        read = read_setting(text, stored)
        assert read == value and type(read) is type(value)


def test_a_value_that_is_not_its_settings_is_refused() -> None:
    with pytest.raises(ValueError, match="not the value of the setting '4'"):
        read_setting("4", "5")
    with pytest.raises(ValueError, match="not the value of the setting '4'"):
        read_setting("4", '"4.0"')
    with pytest.raises(ValueError, match="'{4' is not JSON"):
        read_setting("4", "{4")


ABLATION = '''"""Which learning rate?"""
KIND = "ablation"
METRIC = "val_map_at_r"
MODE = "max"
SEEDS = 1
FIXED = {"train.epochs": 1}
SEARCH = {"optim.lr": {"type": "float", "values": [0.0001, 0.001, 0.01]}}
BASELINE = 0.001
'''


def records(lrs: list[float], first_number: int = 0) -> list[TrialRecord]:
    """One completed trial per learning rate, seed 0."""
    made = []
    for number, lr in enumerate(lrs, start=first_number):
        epoch = {"epoch": 1, "val_map_at_r": 0.3 + lr, "status": "completed"}
        made.append(
            TrialRecord(
                trial_id=f"trial_{number}",
                number=number,
                config={"optim.lr": lr, "train.seed": 0},
                epochs=[epoch],
            )
        )
    return made


def test_trials_csv_keeps_each_setting_as_text_and_as_its_value(tmp_path: Path) -> None:
    space = parse_space(ABLATION, "lr")
    write_tables(tmp_path, records([0.0001, 0.001, 0.01]), space)
    written = pd.read_csv(tmp_path / TRIALS_FILE, dtype=str)
    assert written[SETTING].tolist() == ["0.0001", "0.001", "0.01"]
    assert written[SETTING_VALUE].tolist() == ["0.0001", "0.001", "0.01"]
    assert setting_values(written) == {"0.0001": 0.0001, "0.001": 0.001, "0.01": 0.01}


def test_a_search_has_no_setting(tmp_path: Path) -> None:
    search = parse_space(
        ABLATION.replace('"ablation"', '"search"')
        .replace('"values": [0.0001, 0.001, 0.01]', '"low": 1e-4, "high": 1e-2')
        .replace("BASELINE = 0.001", "NUM_SAMPLES = 2"),
        "search",
    )
    table = results.trials_table(records([0.001]), search)
    assert table[SETTING].tolist() == [""] and table[SETTING_VALUE].tolist() == [""]


def write_round(study_dir: Path, number: int, lrs: list[float], first: int) -> Path:
    """Round `number` of an adaptive study, as the runner leaves it."""
    folder = study_dir / f"round_{number}"
    folder.mkdir(parents=True)
    write_tables(folder, records(lrs, first), parse_space(ABLATION, "lr"))
    return folder


def test_the_runner_reads_the_settings_it_runs_next_with_their_type(tmp_path: Path) -> None:
    space = parse_space(ABLATION, "lr")
    write_round(tmp_path, 1, [0.0001, 0.001, 0.01], 0)
    old = write_round(tmp_path, 2, [0.001, 0.01], 3)
    # A round written before trials.csv kept each setting's value: its text alone is read.
    table = pd.read_csv(old / TRIALS_FILE, dtype=str, keep_default_na=False)
    table.drop(columns=SETTING_VALUE).to_csv(old / TRIALS_FILE, index=False)
    trials = merge_rounds(tmp_path, space, 2)
    values = setting_values(trials)
    assert values == {"0.0001": 0.0001, "0.001": 0.001, "0.01": 0.01}
    assert all(type(value) is float for value in values.values())
    differences = setting_differences(trials, space)
    assert set(differences) == {"0.0001", "0.01"}  # each keyed by its text, as trials.csv is
    merged = pd.read_csv(tmp_path / TRIALS_FILE, dtype=str, keep_default_na=False)
    assert merged[SETTING_VALUE].tolist() == ["0.0001", "0.001", "0.01", "", ""]


# The reports: one reading of a setting, from its value where trials.csv has one.


def with_values(folder: Path, value_of=read_setting) -> Path:
    """`folder` with trials.csv's settings' values written beside their text, as a study
    writes them now; `value_of` gives each setting's value from its text."""
    path = folder / TRIALS_FILE
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    position = table.columns.get_loc(SETTING) + 1
    table.insert(position, SETTING_VALUE, [setting_json(value_of(text)) for text in table[SETTING]])
    table.to_csv(path, index=False)
    return folder


def page(folder: Path) -> str:
    """The report's HTML without its build time."""
    html = build_report(folder).read_text(encoding="utf-8")
    return re.sub(r"Built [^<]* by python -m reports", "Built by python -m reports", html)


@pytest.mark.parametrize(
    "make",
    [
        lambda folder: ablation_folder(folder, stopped_early=[("16", 2, 3)]),
        lambda folder: ablation_folder(
            folder,
            knob="optim.lr",
            effects={"0.0001": 0.0, "0.001": 0.02, "0.01": -0.01},
            baseline=1e-3,
        ),
        lambda folder: ablation_folder(
            folder,
            kind="compare",
            effects={"proxy_anchor": 0.0, "gapan_no_flow": 0.01, "gapan": 0.03},
            baseline="proxy_anchor",
            contrasts={"gapan": "gapan_no_flow"},
        ),
    ],
    ids=["flow depth", "learning rate", "comparison"],
)
def test_a_folder_reports_the_same_with_its_settings_values_or_without(
    tmp_path: Path, make
) -> None:
    folder = make(tmp_path / "study")
    before = page(folder)
    assert page(with_values(folder)) == before


def test_a_setting_written_as_text_stays_text(tmp_path: Path) -> None:
    # Methods named by numbers: their text reads as numbers, their values are names.
    effects = {"1": 0.0, "10": 0.02, "2": 0.01}
    folder = ablation_folder(tmp_path / "study", kind="compare", effects=effects, baseline="1")
    old = load_results(folder)
    assert setting_order(old) == ["1", "2", "10"]  # read from the text alone: numbers
    shutil.copytree(folder, tmp_path / "typed")
    typed = load_results(with_values(tmp_path / "typed", value_of=str))
    assert setting_order(typed) == ["1", "10", "2"]  # the order of METHODS
    assert baseline_setting(typed) == "1"
    data = metric_by_setting_data(typed)
    assert data["axis"] == "category" and data["positions"] == ["1", "10", "2"]


def test_a_number_axis_places_each_setting_at_its_value(tmp_path: Path) -> None:
    folder = with_values(ablation_folder(tmp_path / "study"))
    data = metric_by_setting_data(load_results(folder))
    assert data["settings"] == ["0", "1", "2", "4", "8", "16"]
    assert data["positions"] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0] and data["axis"] == "linear"
    assert axis_kind([1e-4, 1e-2]) == "log"


def test_a_value_that_is_not_its_settings_leaves_its_row_out(tmp_path: Path) -> None:
    folder = with_values(ablation_folder(tmp_path / "study"))
    path = folder / TRIALS_FILE
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.loc[4, SETTING_VALUE] = "2"  # its setting is 1
    table.to_csv(path, index=False)
    loaded = load_results(folder)
    assert len(loaded.trials) == 17
    (note,) = [note for note in loaded.notes if "malformed" in note]
    assert "line 6 (trial train_5f3a1_00004): setting_value '2' is not the value" in note


@pytest.mark.parametrize(
    ("setting", "value", "same"),
    [
        ("0.001", 1e-3, True),
        (0.001, "1e-3", True),
        ("4", 4.0, True),
        (4, 4, True),
        ("True", True, True),
        ("true", True, True),
        (True, "true", True),
        ("1", True, False),
        (1, True, False),
        ("True", 1, False),
        ("glow", "glow", True),
        ("glow", "realnvp", False),
        ("gapan", None, False),
    ],
)
def test_same_setting(setting: Any, value: Any, same: bool) -> None:
    assert same_setting(setting, value) is same
