"""The results folder's writers (gapan.results) and the file helpers they share with the rest of
the package (gapan.files): atomic writes and the one cache root."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gapan import weights
from gapan.data import find_bad_images
from gapan.files import atomic_path, cache_root, write_atomic
from gapan.results import (
    EPOCHS_FILE,
    STUDY_FILE,
    TRIALS_FILE,
    TrialRecord,
    write_study,
    write_tables,
)
from gapan.space import parse_space

TINY_ABLATION = '''"""Does a flow help on a tiny slice?"""
KIND = "ablation"
METRIC = "val_map_at_r"
MODE = "max"
SEEDS = 1
FIXED = {"train.epochs": 2}
SEARCH = {"flow.depth": {"type": "int", "values": [0, 2]}}
BASELINE = 0
'''


def records(final: float, error: str = "") -> list[TrialRecord]:
    """Two finished trials of the tiny ablation; the second failed with `error` if given."""
    made = []
    for number, depth in enumerate((0, 2)):
        epochs = [
            {"epoch": epoch, "train_loss": 1.0 / epoch, "val_map_at_r": final * epoch / 2}
            for epoch in (1, 2)
        ]
        epochs[-1]["status"] = "completed"
        made.append(
            TrialRecord(
                trial_id=f"trial_{number}",
                number=number,
                config={"flow.depth": depth, "train.seed": 0},
                epochs=epochs,
                error=error if number == 1 else "",
                time_total_s=10.0,
            )
        )
    return made


def test_trials_csv_is_written_after_everything_else_a_study_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A part of a study whose trials.csv says it ended is kept on a resume: a driver killed
    # while it writes the tables must not leave that file before the trials' folders.
    space = parse_space(TINY_ABLATION, "tiny_ablation")
    study_dir = tmp_path / "study"

    def killed(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("gapan.results._write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        write_tables(study_dir, records(0.3), space)
    assert not (study_dir / TRIALS_FILE).exists()


def test_results_files_are_replaced_whole_never_rewritten_in_place(tmp_path: Path) -> None:
    # A second name (a hard link) of each file keeps what it held: the new content went into
    # a new file renamed over the old one, so a reader never sees a part of either.
    space = parse_space(TINY_ABLATION, "tiny_ablation")
    study_dir = tmp_path / "study"
    write_study(study_dir, space, {"resources": {"cpu": 1}})
    write_tables(study_dir, records(0.3), space)
    names = [STUDY_FILE, TRIALS_FILE, EPOCHS_FILE, "trials/trial_1/config.json"]
    kept = tmp_path / "kept"
    kept.mkdir()
    before = {}
    for index, name in enumerate(names):
        os.link(study_dir / name, kept / str(index))
        before[name] = (study_dir / name).read_bytes()

    write_study(study_dir, space, {"resources": {"cpu": 2}})
    write_tables(study_dir, records(0.4, error="RuntimeError"), space)
    for index, name in enumerate(names):
        assert (kept / str(index)).read_bytes() == before[name], name
        assert not (study_dir / name).samefile(kept / str(index)), name
    assert (study_dir / TRIALS_FILE).read_bytes() != before[TRIALS_FILE]
    assert not [path for path in study_dir.rglob(".*")], "a temporary file was left behind"


@pytest.mark.parametrize(
    "error",
    ["progress 10%\rRuntimeError: out of memory", 'progress\r\nRuntimeError: "x", y'],
)
def test_a_carriage_return_in_an_error_keeps_its_row_whole(tmp_path: Path, error: str) -> None:
    space = parse_space(TINY_ABLATION, "tiny_ablation")
    write_tables(tmp_path, records(0.3, error=error), space)
    trials = pd.read_csv(tmp_path / TRIALS_FILE, dtype={"trial_id": str}, keep_default_na=False)
    assert list(trials["trial_id"]) == ["trial_0", "trial_1"]
    assert list(trials["error"]) == ["", error]
    assert list(trials["val_map_at_r"]) == [0.3, 0.3]


def test_write_atomic_writes_text_or_bytes_and_keeps_the_old_file_on_failure(
    tmp_path: Path,
) -> None:
    path = tmp_path / "new" / "table.csv"
    write_atomic(path, "first ✓\n")
    assert path.read_text(encoding="utf-8") == "first ✓\n"
    write_atomic(path, b"second")
    with pytest.raises(UnicodeEncodeError):
        write_atomic(path, "\ud800 cannot be encoded")
    assert path.read_bytes() == b"second"
    assert list(path.parent.iterdir()) == [path]


def test_atomic_path_leaves_the_old_file_when_its_writer_fails(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    path.write_text("the last good one")
    with pytest.raises(RuntimeError, match="killed"), atomic_path(path) as temporary:
        temporary.write_text("half of the ne")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "the last good one"
    assert list(tmp_path.iterdir()) == [path]
    with atomic_path(path) as temporary:
        assert temporary.parent == path.parent and temporary != path
        temporary.write_text("the new one")
    assert path.read_text() == "the new one"
    assert list(tmp_path.iterdir()) == [path]


def test_atomic_files_get_the_permissions_of_an_ordinary_file(tmp_path: Path) -> None:
    # A results folder shared by a team stays readable: the umask applies, nothing stricter.
    previous = os.umask(0o022)
    try:
        write_atomic(tmp_path / "trials.csv", "trial_id\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "trials.csv").stat().st_mode) == 0o644


def test_every_cache_lives_under_one_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAPAN_CACHE", str(tmp_path / "cache"))
    assert cache_root() == tmp_path / "cache"
    assert weights.cache_root is cache_root  # converted weights and cached features
    image = tmp_path / "images" / "a.png"
    image.parent.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(image)
    assert find_bad_images([image]) == {}
    assert len(list((tmp_path / "cache" / "image-checks").glob("*.json"))) == 1

    monkeypatch.setenv("GAPAN_CACHE", "~/gapan-elsewhere")
    assert cache_root() == Path.home() / "gapan-elsewhere"
    for unset in ("", None):
        if unset is None:
            monkeypatch.delenv("GAPAN_CACHE")
        else:
            monkeypatch.setenv("GAPAN_CACHE", unset)
        assert cache_root() == Path.home() / ".cache" / "gapan"
