"""Config: flat keys map onto typed sections; anything wrong fails naming the key."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gapan.config import (
    ConfigError,
    ExperimentConfig,
    bounds,
    config_fields,
    from_flat,
    load_config,
    parse_overrides,
    save_config,
    to_flat,
)


def test_flat_keys_round_trip():
    cfg = from_flat({"flow.depth": 8, "prior.variance": 0.5, "loss.metric": "proxy_anchor"})
    assert cfg.flow.depth == 8 and cfg.prior.variance == 0.5
    assert cfg.loss.metric == "proxy_anchor"
    assert from_flat(to_flat(cfg)) == cfg
    assert from_flat({}) == ExperimentConfig()


def test_unknown_key_names_it_and_suggests_the_close_one():
    with pytest.raises(ConfigError, match=r"'flow.dept'.*'flow.depth'"):
        from_flat({"flow.dept": 3})
    with pytest.raises(ConfigError, match="unknown config key 'nosection'"):
        from_flat({"nosection": 1})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("flow.depth", "deep", "takes a int"),
        ("flow.depth", 2.5, "takes a int"),
        ("flow.depth", True, "takes a int"),
        ("flow.depth", 65, "at most 64"),
        ("prior.variance", -1.0, "greater than 0"),
        ("prior.variance", 0.0, "greater than 0"),
        ("prior.variance", float("nan"), "finite"),
        ("anchors.count", 0, "at least 1"),
        ("flow.family", "maf", "one of glow, realnvp"),
        ("prior.learn_variance", "maybe", "takes a bool"),
        ("model.backbone", 3, "takes a str"),
    ],
)
def test_wrong_values_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message) as caught:
        from_flat({key: value})
    assert repr(key) in str(caught.value)


def test_command_line_overrides_are_typed():
    flat = parse_overrides(["flow.depth=8", "prior.learn_variance=true", "optim.lr=3e-4"])
    assert flat == {"flow.depth": 8, "prior.learn_variance": True, "optim.lr": 3e-4}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["flow.depth"])


def test_saved_config_loads_back(tmp_path):
    cfg = from_flat({"anchors.count": 32})
    save_config(cfg, tmp_path / "config.json")
    assert load_config(tmp_path / "config.json") == cfg
    (tmp_path / "bad.json").write_text(json.dumps({"anchors.cnt": 3}))
    with pytest.raises(ConfigError, match="anchors.count"):
        load_config(tmp_path / "bad.json")


def test_bounds_are_exposed_for_search_spaces():
    depth = bounds("flow.depth")
    assert (depth["type"], depth["low"], depth["high"]) == (int, 0, 64)
    assert bounds("flow.family")["choices"] == ("glow", "realnvp")
    assert bounds("prior.variance")["low_open"]


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
)


@given(st.dictionaries(st.sampled_from([*config_fields(), "flow.dept", "x"]), values, max_size=4))
def test_any_input_gives_a_config_or_a_config_error(flat):
    try:
        cfg = from_flat(flat)
    except ConfigError as error:
        assert "'" in str(error)  # names the key
    else:
        assert isinstance(cfg, ExperimentConfig)


@given(st.lists(st.text(max_size=30), max_size=4))
def test_any_command_line_gives_overrides_or_a_config_error(args):
    try:
        parse_overrides(args)
    except ConfigError:
        pass
