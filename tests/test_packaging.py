"""The wheel ships what an installed project needs: the code and every study's search space."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Ignored and machine-local folders stay out of the copy the wheel is built from.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", ".gpu", ".whl", "build", "dist", "results", "runs", "*.egg-info",
    "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis",
)  # fmt: skip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built offline from a copy of the checkout (a build in place would
    leave build/ and egg-info folders in it)."""
    source = tmp_path_factory.mktemp("source") / "project"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    command += ["--no-index", "-q", "-w", str(out), str(source)]
    built = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = out.glob("gapan_studies-*.whl")
    return found


def test_the_wheel_holds_every_search_space(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    spaces = sorted(ROOT.glob("search_spaces/*.py"))
    assert len(spaces) > 1
    for space in spaces:
        assert f"search_spaces/{space.name}" in names
    assert "gapan/space.py" in names and "reports/__init__.py" in names
    assert not any(name.startswith(("tests/", "bench/", "studies/")) for name in names)


def test_spaces_load_by_name_from_the_unpacked_wheel_alone(wheel, tmp_path):
    # A pure-Python wheel installs by unpacking; `-I -S` keeps the checkout, the current folder
    # and site-packages (with the editable install) off sys.path. gapan.space needs only the
    # standard library, so the unpacked wheel is all this interpreter sees.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import gapan.space as space; "
        "assert space.__file__.startswith(sys.argv[1]), space.__file__; "
        "print(*space.shipped_spaces()); "
        "print(space.load_space('ablate_flow_depth').trial_count())"
    )
    run = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(site)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    names, trials = run.stdout.split("\n")[:2]
    assert names.split() == sorted(path.stem for path in ROOT.glob("search_spaces/[!_]*.py"))
    assert int(trials) > 0
