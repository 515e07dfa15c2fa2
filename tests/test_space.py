"""Search spaces: every shipped space is valid; a broken one fails before any trial, naming why."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from gapan.space import (
    DIMENSION_TYPES,
    SpaceError,
    check_space,
    check_structure,
    load_space,
    optuna_distribution,
    optuna_distributions,
    parse_space,
    shipped_spaces,
)

SHIPPED = shipped_spaces()
ROOT = Path(__file__).resolve().parents[1]

ABLATION = '''"""Q?"""
KIND = "ablation"
METRIC = "val_map_at_r"
MODE = "max"
SEEDS = 2
FIXED = {"train.epochs": 3}
SEARCH = {"flow.depth": {"type": "int", "values": [0, 2]}}
BASELINE = 0
'''


def test_shipped_spaces_load():
    assert {
        "ablate_flow_depth",
        "ablate_prior_variance",
        "ablate_anchor_count",
        "search_gapan",
        "compare_methods",
    } <= set(SHIPPED)
    for name in SHIPPED:
        space = load_space(name)
        assert space.question and space.trial_count() > 0


def test_every_space_file_in_the_folder_is_shipped_and_found_from_anywhere(tmp_path):
    assert SHIPPED == sorted(path.stem for path in ROOT.glob("search_spaces/[!_]*.py"))
    # By name from another folder: the package is found as installed, not through the checkout
    # as the current folder (tests/test_packaging.py checks the wheel on its own).
    code = "from gapan.space import load_space; print(load_space('search_gapan').kind)"
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "search"


def test_a_space_loads_by_path_too(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(ABLATION)
    assert load_space(path).name == load_space(str(path)).name == "tiny"
    with pytest.raises(SpaceError, match="no search space file"):
        load_space(tmp_path / "absent.py")


@pytest.mark.parametrize("name", ["__init__", "../search_spaces/search_gapan", ""])
def test_only_study_names_are_looked_up(name):
    with pytest.raises(SpaceError, match="known spaces: ablate_addon_flow_depth, ablate_anchor"):
        load_space(name)


def test_spaces_and_their_distributions_need_no_torch():
    # The reports build Optuna distributions through gapan.space on machines without torch.
    code = (
        "import sys; from gapan.space import load_space, optuna_distributions; "
        "optuna_distributions(load_space('search_gapan')); "
        "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_ablation_grid_covers_every_setting_and_seed():
    space = parse_space(ABLATION, "tiny")
    assert space.knob == "flow.depth"
    assert space.grid() == {"flow.depth": [0, 2], "train.seed": [0, 1]}
    assert space.trial_count() == 4
    distributions = optuna_distributions(space)
    assert distributions["flow.depth"] == CategoricalDistribution([0, 2])
    assert distributions["train.seed"] == CategoricalDistribution([0, 1])


def test_search_ranges_become_optuna_distributions():
    space = load_space("search_gapan")
    distributions = optuna_distributions(space)
    assert distributions["prior.variance"] == FloatDistribution(0.01, 10.0, log=True)
    assert distributions["flow.depth"] == IntDistribution(0, 8)
    assert "train.seed" not in distributions


SEARCH = '''"""Q?"""
KIND = "search"
METRIC = "val_map_at_r"
MODE = "max"
NUM_SAMPLES = 4
SEARCH = {"prior.variance": {"type": "float", "low": 0.01, "high": 10.0, "log": True}}
'''


def test_study_json_dimensions_become_the_same_distributions():
    # What a study records in study.json (its checked space) is what a report rebuilds.
    for name in SHIPPED:
        space = load_space(name)
        rebuilt = {
            key: optuna_distribution(key, dimension)
            for key, dimension in space.to_dict()["search"].items()
        }
        assert rebuilt.items() <= optuna_distributions(space).items()
    assert optuna_distribution("x", {"type": "int", "values": [1, 2]}) == (
        CategoricalDistribution([1, 2])
    )
    assert optuna_distribution("x", {"type": "float", "low": 1, "high": 2}) == (
        FloatDistribution(1.0, 2.0)
    )


def checked_search(key: str, dimension) -> dict:
    """`dimension` as the space checker keeps it, in a search study over `key` alone."""
    space = dataclasses.replace(parse_space(SEARCH, "search"), search={key: dimension})
    return check_space(space).search[key]


@pytest.mark.parametrize(
    ("dimension", "message"),
    [
        ({"type": "float", "low": 0.1, "high": 1.0, "step": 0.1}, "unknown field.*step"),
        ({"low": 0.1, "high": 1.0}, "type"),
        ({"type": "categorical", "low": 0.1, "high": 1.0}, "lists its 'values'"),
        ({"type": "float", "low": 1.0, "high": 0.1}, "below"),
        ({"type": "float", "low": 0.0, "high": 1.0, "log": True}, "log scale"),
        ({"type": "float", "low": 0.1, "high": float("inf")}, "finite"),
        ({"type": "float", "low": 0.1, "high": 1.0, "log": "yes"}, "True or False"),
        ({"type": "int", "values": [1, 1]}, "repeats"),
        ({"type": "int", "values": []}, "non-empty"),
        ({"type": "int", "values": [1], "low": 0}, "either"),
        ([1, 2], "must be a dict"),
    ],
)
def test_the_builder_and_the_checker_refuse_the_same_dimensions(dimension, message):
    # A key whose config bounds (0 and above) leave the dimension's own rules to speak.
    with pytest.raises(SpaceError, match=message):
        optuna_distribution("loss.nll_weight", dimension)
    with pytest.raises(SpaceError, match=message):
        checked_search("loss.nll_weight", dimension)


def test_range_bounds_are_numbers_of_the_keys_type():
    dimension = {"type": "int", "low": 0.5, "high": 4}
    with pytest.raises(SpaceError, match="integers"):
        optuna_distribution("flow.depth", dimension)
    with pytest.raises(SpaceError, match="flow.depth"):
        checked_search("flow.depth", dimension)
    with pytest.raises(SpaceError, match="use type 'int'"):
        checked_search("flow.depth", {"type": "float", "low": 0, "high": 4})
    with pytest.raises(SpaceError, match="use type 'float'"):
        checked_search("prior.variance", {"type": "int", "low": 1, "high": 4})
    # The checker converts text from the space to the key's type; study.json holds the numbers.
    with pytest.raises(SpaceError, match="numbers"):
        optuna_distribution("prior.variance", {"type": "float", "low": "0.1", "high": 1.0})
    with pytest.raises(SpaceError, match="not a number, string"):
        optuna_distribution("method", {"type": "categorical", "values": [[1, 2]]})


numbers = st.integers(-1, 20) | st.floats(-1.0, 20.0) | st.sampled_from([0, 1e-3, float("nan")])
dimensions = (
    st.fixed_dictionaries(
        {"type": st.sampled_from(DIMENSION_TYPES), "values": st.lists(numbers, max_size=3)}
    )
    | st.fixed_dictionaries(
        {"type": st.sampled_from(["int", "float"]), "low": numbers, "high": numbers},
        optional={"log": st.booleans()},
    )
    | st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from([*DIMENSION_TYPES, "integer"]),
            "values": st.lists(numbers, max_size=3),
            "low": numbers,
            "high": numbers,
            "log": st.booleans() | st.just("no"),
            "step": numbers,
        },
    )
)


@settings(max_examples=400)  # most drawn dimensions are refused; these are about accepted ones
@given(dimensions, st.sampled_from(["flow.depth", "prior.variance"]))
def test_every_dimension_the_checker_accepts_the_builder_accepts(dimension, key):
    try:
        checked = checked_search(key, dimension)
    except SpaceError:
        return
    distribution = optuna_distribution(key, checked)
    # The checker may convert a value to its key's type (1.0 for an int key becomes 1); what it
    # keeps is what the distribution holds.
    if "values" in checked:
        assert list(distribution.choices) == checked["values"]
    else:
        assert (distribution.low, distribution.high) == (checked["low"], checked["high"])
        assert distribution.log == checked.get("log", False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('"flow.depth"', '"flow.dept"'), "flow.depth"),  # suggests the real key
        (('"values": [0, 2]', '"values": [0, -2]'), "at least 0"),
        (('"values": [0, 2]', '"values": [0, 65]'), "at most 64"),
        (('"values": [0, 2]', '"values": []'), "non-empty"),
        (('"type": "int"', '"type": "integer"'), "type"),
        (("BASELINE = 0", "BASELINE = 1"), "BASELINE"),
        (('METRIC = "val_map_at_r"', 'METRIC = "test_map_at_r"'), "never tune"),
        (('{"train.epochs": 3}', '{"train.epochs": 0}'), "FIXED"),
        (('{"train.epochs": 3}', '{"flow.depth": 3}'), "both FIXED and searched"),
        (('KIND = "ablation"', 'KIND = "sweep"'), "KIND"),
        (("SEEDS = 2", "SEEDS = 0"), "SEEDS"),
        (("SEEDS = 2", 'SEEDS = __import__("os")'), "literal"),
        (("BASELINE = 0", "BASELINE = 0\nprint(1)"), "assignments only"),
        (('"""Q?"""', ""), "docstring"),
    ],
)
def test_broken_spaces_name_the_field(change, message):
    old, new = change
    with pytest.raises(SpaceError, match=message):
        parse_space(ABLATION.replace(old, new), "broken")


def test_a_checked_space_is_passed_on_not_checked_again():
    from gapan.tune import StudyOptions, apply_options

    space = load_space("ablate_flow_depth")
    applied = apply_options(space, StudyOptions(name="x", seeds=2))
    # The checked dimension itself runs, with no second check of its values.
    assert applied.search["flow.depth"] is space.search["flow.depth"]
    # What options build from a checked space has its structure checked, not its values: each
    # value was checked where it entered, and a trial's config is checked when resolved.
    deep = dataclasses.replace(space, search={"flow.depth": {"type": "int", "values": [0, 65]}})
    assert check_structure(deep, "deep") is deep
    with pytest.raises(SpaceError, match="at most 64"):
        check_space(deep, "deep")
    with pytest.raises(SpaceError, match="BASELINE 3 is not one of the settings"):
        check_structure(dataclasses.replace(space, baseline=3))
    with pytest.raises(SpaceError, match="both FIXED and searched"):
        check_structure(dataclasses.replace(space, fixed={"flow.depth": 2}))


def test_a_tuned_comparisons_values_are_checked_once_each_naming_their_method():
    with pytest.raises(SpaceError, match=r"METHODS\['gapan'\]: SEARCH\['flow.depth'\].*at most"):
        parse_space(TUNED.replace('"low": 1, "high": 4', '"low": 1, "high": 99'), "t")
    with pytest.raises(SpaceError, match=r"METHODS\['proxy_anchor'\]: fixed: .*loss.metric"):
        parse_space(TUNED.replace('"loss.metric": "proxy_anchor"', '"loss.metric": "x"'), "t")
    # A shared range is the space's own, named once.
    with pytest.raises(SpaceError, match=r"^<space>: SEARCH\['optim.lr'\]"):
        parse_space(TUNED.replace('"low": 1e-4', '"low": -1.0'), "t")
    tuned = parse_space(TUNED, "tuned")
    assert check_structure(tuned) is tuned


def test_missing_space_lists_the_known_ones():
    with pytest.raises(SpaceError, match="ablate_flow_depth"):
        load_space("ablate_nothing")


@given(st.text(max_size=300))
def test_any_text_gives_a_space_or_a_space_error(text):
    try:
        parse_space(text, "fuzz")
    except SpaceError:
        pass


literals = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=3)
    ),
    max_leaves=8,
)


@given(
    st.sampled_from(["SEARCH", "FIXED", "SEEDS", "BASELINE", "METHODS", "NUM_SAMPLES"]), literals
)
def test_any_field_value_gives_a_space_or_a_space_error(field, value):
    text = ABLATION + f"\n{field} = {value!r}\n"
    try:
        parse_space(text, "fuzz")
    except SpaceError:
        pass


TUNED = '''"""Q?"""
KIND = "tuned"
METRIC = "val_map_at_r"
MODE = "max"
SEEDS = 3
NUM_SAMPLES = 4
FIXED = {"train.epochs": 3}
SEARCH = {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}
METHODS = {
    "gapan": {"fixed": {}, "search": {"flow.depth": {"type": "int", "low": 1, "high": 4}}},
    "proxy_anchor": {
        "fixed": {"loss.metric": "proxy_anchor", "loss.align_weight": 0.0},
        "search": {"loss.proxy_margin": {"type": "float", "low": 0.0, "high": 0.5}},
    },
}
BASELINE = "gapan"
'''


def test_a_tuned_comparison_searches_every_method_with_the_same_budget():
    space = parse_space(TUNED, "tuned")
    searches = space.searches()
    assert list(searches) == ["gapan", "proxy_anchor"]
    for method, search in searches.items():
        assert search.kind == "search" and search.num_samples == 4 and search.scheduler is None
        assert search.fixed["train.epochs"] == 3 and "optim.lr" in search.search
        assert search.name == f"search_{method}"
    assert set(searches["proxy_anchor"].search) == {"optim.lr", "loss.proxy_margin"}
    assert searches["proxy_anchor"].fixed["loss.metric"] == "proxy_anchor"
    confirmation = space.confirmation(
        {"gapan": {"optim.lr": 1e-3, "flow.depth": 2}, "proxy_anchor": {"optim.lr": 2e-3}}
    )
    assert confirmation.kind == "compare" and confirmation.baseline == "gapan"
    assert confirmation.seed_list() == [1, 2, 3]  # never the searches' seed 0
    assert confirmation.methods["proxy_anchor"] == {
        "loss.metric": "proxy_anchor",
        "loss.align_weight": 0.0,
        "optim.lr": 2e-3,
    }
    assert space.trial_count() == 2 * (4 + 3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('BASELINE = "gapan"', 'BASELINE = "gapan2"'), "BASELINE"),
        (("NUM_SAMPLES = 4", "NUM_SAMPLES = 0"), "NUM_SAMPLES"),
        (("NUM_SAMPLES = 4", 'NUM_SAMPLES = 4\nSCHEDULER = "asha"'), "whole budget"),
        (('"search": {"flow.depth"', '"search": {"optim.lr"'), "shared already"),
        (
            ('"flow.depth": {"type": "int", "low": 1', '"flow.dept": {"type": "int", "low": 1'),
            "gapan",
        ),
        (('"proxy_anchor": {', '"../x": {'), "names a folder"),
        (('"fixed": {}, ', '"fixed": [], '), "dicts"),
        (('"loss.proxy_margin": {"type"', '"loss.align_weight": {"type"'), "both FIXED and"),
    ],
)
def test_broken_tuned_comparisons_name_the_field(change, message):
    old, new = change
    assert old in TUNED
    with pytest.raises(SpaceError, match=message):
        parse_space(TUNED.replace(old, new), "broken")


@given(st.sampled_from(["SEARCH", "FIXED", "METHODS", "NUM_SAMPLES", "BASELINE"]), literals)
def test_any_tuned_field_value_gives_a_space_or_a_space_error(field, value):
    try:
        parse_space(TUNED + f"\n{field} = {value!r}\n", "fuzz")
    except SpaceError:
        pass


def test_the_seeds_of_a_tuned_comparison_are_the_studys_to_choose():
    with pytest.raises(SpaceError, match="train.seed is the study's to choose"):
        parse_space(
            TUNED.replace('{"train.epochs": 3}', '{"train.epochs": 3, "train.seed": 2}'), "t"
        )
    with pytest.raises(SpaceError, match="train.seed is the study's to choose"):
        parse_space(TUNED.replace('"fixed": {}', '"fixed": {"train.seed": 1}'), "t")


def test_a_multi_objective_search_names_one_metric_and_one_cost():
    from gapan.space import with_objectives

    search = load_space("search_gapan")
    both = with_objectives(search, ["map_at_r", "time_per_step"])
    assert both.objectives == ["val_map_at_r", "time_per_step_s"]
    assert both.directions() == ["max", "min"] and both.metric == "val_map_at_r"
    for names in (["time_per_step"], ["map_at_r", "time_per_epoch"], ["mapp", "time_per_step"]):
        with pytest.raises(SpaceError, match="name a metric .* and one cost"):
            with_objectives(search, names)
    with pytest.raises(SpaceError, match="for search studies"):
        with_objectives(load_space("ablate_flow_depth"), ["map_at_r", "time_per_step"])


def test_the_adaptive_flags_go_with_seeds_auto(capsys):
    from gapan.tune.cli import run_study_script

    with pytest.raises(SystemExit):
        run_study_script("ablate_flow_depth", "", ["--min-seeds", "4"])
    assert "--min-seeds go with --seeds auto" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_study_script("ablate_flow_depth", "", ["--seeds", "many"])
    assert "a number of seeds or auto" in capsys.readouterr().err


def test_the_equivalence_margin_is_positive_and_recorded_for_the_report(capsys):
    from gapan.tune import StudyOptions
    from gapan.tune.cli import run_study_script

    for bad in ("-0.01", "0", "nan", "inf"):
        assert run_study_script("ablate_flow_depth", "", ["--equivalence-margin", bad]) == 2
        assert "--equivalence-margin must be a positive number" in capsys.readouterr().err
    assert StudyOptions(name="s", equivalence_margin=0.01).reporting == {"equivalence_margin": 0.01}
    assert StudyOptions(name="s").reporting == {}
