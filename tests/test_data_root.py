"""data.root (--data-root) naming a file: every data set says it is a file, not a folder, and
which folder it wants, before any study starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from gapan.config import DATASETS, DataConfig
from gapan.data import DataError, build_splits

# What each data set's message says data.root should hold.
EXPECTED = {
    "wesnoth": "a prepared Wesnoth cache",
    "cub": "CUB_200_2011/ with images.txt",
    "cars": "cars196/ with cars_annos.mat",
    "sop": "Stanford_Online_Products/ with Ebay_train.txt",
    "inshop": "Inshop_Clothes/ with Eval/list_eval_partition.txt",
    "folder": "<root>/<class name>/<image files>",
}


pytestmark = pytest.mark.usefixtures("private_caches")


def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "README.md"
    path.write_text("# not a data set\n", encoding="utf-8")
    return path


def test_every_data_set_is_covered() -> None:
    assert set(EXPECTED) == set(DATASETS.names)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_file_as_data_root_is_named_a_file(tmp_path: Path, name: str) -> None:
    path = a_file(tmp_path)
    with pytest.raises(DataError) as error:
        build_splits(DataConfig(name=name, root=str(path)))
    message = str(error.value)
    assert f"{path} is a file, not a folder" in message
    assert "does not exist" not in message and "Prepare it with" not in message
    assert EXPECTED[name] in message


def test_a_missing_data_root_still_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=f"{missing} does not exist. Set data.root to a folder"):
        build_splits(DataConfig(name="cub", root=str(missing)))


def test_the_study_command_refuses_a_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gapan.tune.cli import run_study_script

    path = a_file(tmp_path)
    results = tmp_path / "results"
    argv = ["--smoke", "--data-root", str(path), "--no-report", "--results-dir", str(results)]
    assert run_study_script("ablate_flow_depth", "", argv) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: data set folder {path} is a file, not a folder.")
    assert "a prepared Wesnoth cache" in line
    assert not results.exists()
