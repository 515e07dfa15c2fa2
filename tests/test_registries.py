"""The names a user chooses (gapan.config's registries): each one's implementation is found, the
config allows exactly these names, an unknown one is named with the known ones, and the study
scripts' help lists them without importing torch."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
from conftest import ROOT

from gapan.backbone_modes import BackboneMode
from gapan.config import (
    BACKBONE_MODES,
    DATASETS,
    FLOW_FAMILIES,
    METRIC_LOSSES,
    ConfigError,
    DataConfig,
    ExperimentConfig,
    Registry,
    bounds,
    from_flat,
)
from gapan.data import build_splits

REGISTRIES = [DATASETS, BACKBONE_MODES, FLOW_FAMILIES, METRIC_LOSSES]
EVERY_NAME = [(registry, name) for registry in REGISTRIES for name in registry.names]


def ids(case) -> str:
    return f"{case[0].key}={case[1]}" if isinstance(case, tuple) else case.key


@pytest.mark.parametrize("registry", REGISTRIES, ids=ids)
def test_the_config_allows_the_names_of_its_registry_the_first_by_default(registry: Registry):
    assert bounds(registry.key)["choices"] == registry.names
    section, _, field = registry.key.partition(".")
    assert getattr(getattr(ExperimentConfig(), section), field) == registry.names[0]


# What each registry's implementations take, by their parameters' names.
PARAMETERS = {
    DATASETS.key: ["cfg"],
    FLOW_FAMILIES.key: ["features", "coupling"],
    METRIC_LOSSES.key: ["cfg", "num_classes", "dim"],
}


@pytest.mark.parametrize("case", EVERY_NAME, ids=ids)
def test_every_name_finds_its_implementation(case):
    registry, name = case
    implementation = registry.get(name)
    if registry is BACKBONE_MODES:
        assert isinstance(implementation, BackboneMode)
    elif registry is METRIC_LOSSES and name == "none":
        assert implementation is None
    else:
        assert list(inspect.signature(implementation).parameters) == PARAMETERS[registry.key]


@pytest.mark.parametrize("registry", REGISTRIES, ids=ids)
def test_an_unknown_name_is_named_with_the_known_ones_by_the_config_and_the_registry(
    registry: Registry,
):
    expected = f"config key '{registry.key}' must be one of {', '.join(registry.names)}; got 'x'"
    with pytest.raises(ConfigError) as from_config:
        from_flat({registry.key: "x"})
    with pytest.raises(ConfigError) as from_registry:
        registry.get("x")
    assert str(from_config.value) == str(from_registry.value) == expected


def test_a_name_that_bypassed_the_config_is_refused_by_name():
    with pytest.raises(ConfigError, match="'data.name' must be one of wesnoth, cub, .*'mnist'"):
        build_splits(DataConfig(name="mnist"))


def test_the_modes_say_what_they_train():
    frozen, partial, finetune = (BACKBONE_MODES.get(n) for n in ("frozen", "partial", "finetune"))
    assert [mode.trains_backbone for mode in (frozen, partial, finetune)] == [False, True, True]
    assert [mode.trains_whole_backbone for mode in (frozen, partial, finetune)] == [
        False,
        False,
        True,
    ]
    assert [mode.cut for mode in (frozen, partial, finetune)] == [False, True, False]


def test_a_study_scripts_help_lists_the_names_without_importing_torch():
    code = (
        "import runpy, sys; sys.argv = ['ablate_flow_depth.py', '--help']\n"
        "try:\n"
        "    runpy.run_path('studies/ablate_flow_depth.py', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print([name for name in ('torch', 'ray') if name in sys.modules])"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    *help_lines, loaded = run.stdout.strip().splitlines()
    assert loaded == "[]"
    text = " ".join(" ".join(help_lines).split())
    assert "{" + ",".join(BACKBONE_MODES.names) + "}" in text
    for name in DATASETS.names:
        assert f"{name}:" in text
