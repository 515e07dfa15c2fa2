"""Search spaces: plain data, one file per study, checked against the config before any trial runs.

A space file (``search_spaces/<study>.py``) holds a docstring stating the question the study
answers and literal assignments only; it is read with `ast.literal_eval`, never executed::

    KIND = "ablation"            # ablation | search | compare
    METRIC = "val_map_at_r"      # a validation metric: studies never tune on the test classes
    MODE = "max"
    SEEDS = 3                    # seeds per setting; every seed's result is kept
    FIXED = {"train.epochs": 10}
    SEARCH = {"flow.depth": {"type": "int", "values": [0, 1, 2, 4, 8, 16]}}
    BASELINE = 0                 # the setting every other one is compared against

A search study gives ranges (``{"type": "float", "low": 1e-2, "high": 10.0, "log": True}``),
``NUM_SAMPLES`` and ``SCHEDULER = "asha"``; a comparison gives ``METHODS`` (name -> config
overrides) and searches the name.
"""

from __future__ import annotations

import ast
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gapan.config import ConfigError, bounds, coerce_value, config_fields, from_flat

SPACES_DIR = Path(__file__).resolve().parents[1] / "search_spaces"
KINDS = ("ablation", "search", "compare")
DIMENSION_TYPES = ("int", "float", "categorical")
METHOD = "method"  # the knob of a comparison: names of config presets


class SpaceError(ValueError):
    """A search space that cannot run; the message names the file and field."""


@dataclass(frozen=True)
class StudySpace:
    name: str
    question: str
    kind: str
    metric: str
    mode: str
    seeds: int = 1
    fixed: dict[str, Any] = field(default_factory=dict)
    search: dict[str, dict[str, Any]] = field(default_factory=dict)
    baseline: Any = None
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    scheduler: str | None = None
    num_samples: int = 0

    @property
    def knob(self) -> str | None:
        """The one searched key of an ablation or comparison."""
        return None if self.kind == "search" else next(iter(self.search))

    def grid(self) -> dict[str, list[Any]]:
        """Every (setting, seed) pair of an ablation or comparison."""
        return {self.knob: list(self.search[self.knob]["values"]), "train.seed": self.seed_list()}

    def seed_list(self) -> list[int]:
        return list(range(self.seeds))

    def trial_count(self) -> int:
        if self.kind == "search":
            return self.num_samples * self.seeds
        return len(self.search[self.knob]["values"]) * self.seeds

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "knob": self.knob}


_FIELDS = {
    "KIND": "kind",
    "METRIC": "metric",
    "MODE": "mode",
    "SEEDS": "seeds",
    "FIXED": "fixed",
    "SEARCH": "search",
    "BASELINE": "baseline",
    "METHODS": "methods",
    "SCHEDULER": "scheduler",
    "NUM_SAMPLES": "num_samples",
}


def load_space(name_or_path: str | Path) -> StudySpace:
    """Read and check a space by study name (``ablate_flow_depth``) or file path."""
    path = Path(name_or_path)
    if path.suffix != ".py":
        path = SPACES_DIR / f"{name_or_path}.py"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SPACES_DIR.glob("*.py") if p.stem[0] != "_"))
        raise SpaceError(f"no search space file {path} (known spaces: {known})")
    return parse_space(path.read_text(), path.stem, source=str(path))


def parse_space(text: str, name: str, source: str = "<space>") -> StudySpace:
    try:
        tree = ast.parse(text, filename=source)
    except SyntaxError as error:
        raise SpaceError(
            f"{source}: not valid Python syntax ({error.msg}, line {error.lineno})"
        ) from None
    values: dict[str, Any] = {}
    for node in tree.body[1:] if ast.get_docstring(tree) else tree.body:
        if not (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            raise SpaceError(
                f"{source}, line {node.lineno}: a space file holds a docstring and NAME = literal "
                "assignments only"
            )
        target = node.targets[0].id
        if target not in _FIELDS:
            raise SpaceError(f"{source}: unknown field {target}; known: {', '.join(_FIELDS)}")
        try:
            values[_FIELDS[target]] = ast.literal_eval(node.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise SpaceError(
                f"{source}: {target} must be a literal (numbers, strings, lists, dicts)"
            ) from None
    question = (ast.get_docstring(tree) or "").strip()
    if not question:
        raise SpaceError(f"{source}: the docstring must state the question the study answers")
    for required in ("KIND", "METRIC", "MODE", "SEARCH"):
        if _FIELDS[required] not in values:
            raise SpaceError(f"{source}: {required} is missing")
    try:
        space = StudySpace(name=name, question=question, **values)
    except TypeError as error:
        raise SpaceError(f"{source}: {error}") from None
    return check_space(space, source)


def check_space(space: StudySpace, source: str = "<space>") -> StudySpace:
    """Validate everything a study needs before any trial starts; values are coerced in place."""

    def fail(message: str) -> SpaceError:
        return SpaceError(f"{source}: {message}")

    if space.kind not in KINDS:
        raise fail(f"KIND must be one of {', '.join(KINDS)}; got {space.kind!r}")
    if space.mode not in ("max", "min"):
        raise fail(f"MODE must be 'max' or 'min'; got {space.mode!r}")
    if not isinstance(space.metric, str) or not space.metric.startswith("val_"):
        raise fail(
            f"METRIC must be a validation metric (val_...); studies never tune on the "
            f"unseen test classes; got {space.metric!r}"
        )
    if not isinstance(space.seeds, int) or isinstance(space.seeds, bool) or space.seeds < 1:
        raise fail(f"SEEDS must be a positive integer; got {space.seeds!r}")
    if not isinstance(space.fixed, dict):
        raise fail("FIXED must be a dict of config keys")
    try:
        from_flat(space.fixed)
        fixed = {key: coerce_value(key, value) for key, value in space.fixed.items()}
    except ConfigError as error:
        raise fail(f"FIXED: {error}") from None
    if not isinstance(space.search, dict) or not space.search:
        raise fail("SEARCH must be a non-empty dict of searched keys")

    methods = {}
    if space.kind == "compare":
        if set(space.search) != {METHOD}:
            raise fail(f"a comparison searches {METHOD!r} only (the names in METHODS)")
        if not isinstance(space.methods, dict) or not space.methods:
            raise fail("METHODS must map method names to config overrides")
        for method, overrides in space.methods.items():
            try:
                from_flat({**fixed, **overrides})
            except (ConfigError, TypeError, AttributeError) as error:
                raise fail(f"METHODS[{method!r}]: {error}") from None
            methods[method] = dict(overrides)
    elif space.methods:
        raise fail("METHODS belongs to comparison studies (KIND = 'compare')")

    search = {
        key: _check_dimension(key, dim, space.kind, methods, fail)
        for key, dim in space.search.items()
    }
    if "train.seed" in search:
        raise fail("train.seed is set by SEEDS, not searched")
    overlap = set(search) & set(fixed)
    if overlap:
        raise fail(f"{', '.join(sorted(overlap))} is both FIXED and searched")

    baseline = space.baseline
    if space.kind in ("ablation", "compare"):
        if len(search) != 1:
            raise fail("an ablation searches exactly one key (its knob)")
        knob = next(iter(search))
        if "values" not in search[knob]:
            raise fail(f"SEARCH[{knob!r}] of an ablation lists its settings under 'values'")
        if baseline not in search[knob]["values"]:
            raise fail(f"BASELINE {baseline!r} is not one of the settings of {knob!r}")
    else:
        if not isinstance(space.num_samples, int) or space.num_samples < 1:
            raise fail("a search study sets NUM_SAMPLES, a positive integer")
        if baseline is not None:
            raise fail("BASELINE belongs to ablations and comparisons")
        if space.seeds != 1:
            raise fail(
                "a search study runs one seed per configuration (SEEDS = 1); compare its "
                "best configurations over seeds with a comparison study"
            )
    if space.scheduler not in (None, "asha"):
        raise fail(f"SCHEDULER must be 'asha' or None; got {space.scheduler!r}")
    return dataclasses.replace(space, fixed=fixed, search=search, methods=methods)


def _check_dimension(key, dim, kind, methods, fail) -> dict[str, Any]:
    if not isinstance(dim, dict):
        raise fail(f"SEARCH[{key!r}] must be a dict like {{'type': 'int', 'values': [...]}}")
    if key != METHOD and key not in config_fields():
        try:
            bounds(key)  # raises, suggesting the closest key
        except ConfigError as error:
            raise fail(f"SEARCH: the trainer has no such key: {error}") from None
    unknown = set(dim) - {"type", "values", "low", "high", "log"}
    if unknown:
        raise fail(f"SEARCH[{key!r}]: unknown field(s) {', '.join(sorted(unknown))}")
    kind_of = dim.get("type")
    if kind_of not in DIMENSION_TYPES:
        raise fail(f"SEARCH[{key!r}]['type'] must be one of {', '.join(DIMENSION_TYPES)}")

    def check_value(value):
        if key == METHOD:
            if value not in methods:
                raise fail(f"SEARCH[{key!r}]: {value!r} is not in METHODS")
            return value
        try:
            return coerce_value(key, value)
        except ConfigError as error:
            raise fail(f"SEARCH[{key!r}]: {error}") from None

    if "values" in dim:
        if set(dim) & {"low", "high", "log"}:
            raise fail(f"SEARCH[{key!r}] gives either 'values' or 'low'/'high', not both")
        values = dim["values"]
        if not isinstance(values, list) or not values:
            raise fail(f"SEARCH[{key!r}]['values'] must be a non-empty list")
        checked = [check_value(v) for v in values]
        if len(set(map(repr, checked))) != len(checked):
            raise fail(f"SEARCH[{key!r}]['values'] repeats a value")
        return {"type": kind_of, "values": checked}
    if kind != "search":
        raise fail(f"SEARCH[{key!r}]: ablations list their settings under 'values'")
    if kind_of == "categorical":
        raise fail(f"SEARCH[{key!r}]: a categorical dimension lists its 'values'")
    if "low" not in dim or "high" not in dim:
        raise fail(f"SEARCH[{key!r}] needs 'low' and 'high' (or 'values')")
    low, high = check_value(dim["low"]), check_value(dim["high"])
    if kind_of == "int" and bounds(key)["type"] is not int:
        raise fail(f"SEARCH[{key!r}]: {key} is not an integer key; use type 'float'")
    if not low < high:
        raise fail(f"SEARCH[{key!r}]: low must be below high; got {low} and {high}")
    log = dim.get("log", False)
    if not isinstance(log, bool):
        raise fail(f"SEARCH[{key!r}]['log'] must be True or False")
    if log and not low > 0:
        raise fail(f"SEARCH[{key!r}]: a log scale needs low > 0")
    if kind_of == "float" and not (math.isfinite(low) and math.isfinite(high)):
        raise fail(f"SEARCH[{key!r}]: bounds must be finite")
    return {"type": kind_of, "low": low, "high": high, "log": log}


def optuna_distributions(space: StudySpace) -> dict[str, Any]:
    """The searched dimensions as Optuna distributions (for OptunaSearch)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out = {}
    for key, dim in space.search.items():
        if "values" in dim:
            out[key] = CategoricalDistribution(dim["values"])
        elif dim["type"] == "int":
            out[key] = IntDistribution(dim["low"], dim["high"], log=dim["log"])
        else:
            out[key] = FloatDistribution(dim["low"], dim["high"], log=dim["log"])
    if space.kind != "search":
        out["train.seed"] = CategoricalDistribution(space.seed_list())
    return out
