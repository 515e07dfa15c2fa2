"""Search spaces: every shipped space is valid; a broken one fails before any trial, naming why."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from gapan.space import SPACES_DIR, SpaceError, load_space, optuna_distributions, parse_space

SHIPPED = sorted(p.stem for p in SPACES_DIR.glob("*.py"))

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
