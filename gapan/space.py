"""Search spaces: plain data, one file per study, checked against the config before any trial runs.

A space file (``search_spaces/<study>.py``) holds a docstring stating the question the study
answers and literal assignments only; it is read with `ast.literal_eval`, never executed. The
files ship inside the ``search_spaces`` package, so a study finds its space by name wherever the
project is installed::

    KIND = "ablation"            # ablation | search | compare
    METRIC = "val_map_at_r"      # a validation metric: studies never tune on the test classes
    MODE = "max"
    SEEDS = 3                    # seeds per setting; every seed's result is kept
    FIXED = {"train.epochs": 10}
    SEARCH = {"flow.depth": {"type": "int", "values": [0, 1, 2, 4, 8, 16]}}
    BASELINE = 0                 # the setting every other one is compared against

A search study gives ranges (``{"type": "float", "low": 1e-2, "high": 10.0, "log": True}``),
``NUM_SAMPLES`` and ``SCHEDULER = "asha"``; a comparison gives ``METHODS`` (name -> config
overrides) and searches the name. A tuned comparison (``KIND = "tuned"``) gives ``METHODS`` as
name -> ``{"fixed": {...}, "search": {...}}``: each method is searched (`StudySpace.searches`)
over ``SEARCH`` (the ranges every method shares) and its own ranges with ``NUM_SAMPLES``
trials, then each one's best configuration runs ``SEEDS`` fresh seeds in a comparison
(`StudySpace.confirmation`). A comparison (tuned or not) may add ``CONTRASTS`` (method -> the
method it is compared with, e.g. an add-on against the loss it adds to): comparisons beside
those with the ``BASELINE``, paired by seed the same way, a Holm family of their own.

A space is checked once, where it enters (`check_space`, as `load_space` reads it); what is
built from a checked space (options applied, a round, a split, a tuned comparison's searches)
needs `check_structure` alone. `optuna_distributions` turns a checked space's dimensions into
Optuna distributions for the studies, and `optuna_distribution` one dimension recorded as plain
data (study.json) for the reports, checking it first. This module imports neither torch nor
Optuna at import time, so the reports use it without either.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.resources
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gapan.config import ConfigError, bounds, coerce_value, config_fields

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

SPACES_PACKAGE = "search_spaces"  # the package that ships the space files
KINDS = ("ablation", "search", "compare", "tuned")
DIMENSION_TYPES = ("int", "float", "categorical")
DIMENSION_FIELDS = ("type", "values", "low", "high", "log")
METHOD = "method"  # the knob of a comparison: names of config presets
SEARCH_PREFIX = "search_"  # a tuned comparison's folder of each method's search
CONFIRMATION = "confirm"  # and of the comparison of their best configurations
SPLIT_PREFIX = "split_"  # a study replicated on class splits: its folder of each split
SPLIT_KEY = "data.split_seed"  # the config key that picks a split


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
    # Comparisons other than with the baseline: method -> the method it is compared with.
    contrasts: dict[str, str] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    scheduler: str | None = None
    num_samples: int = 0
    first_seed: int = 0  # seeds run are first_seed, first_seed + 1, ... (set by the runner)
    # A multi-objective search: trials.csv columns, the metric first (its MODE), then costs
    # (minimised); empty for a study of the metric alone (`with_objectives`).
    objectives: list[str] = field(default_factory=list)

    def directions(self) -> list[str]:
        """Each objective's direction, ``max`` or ``min``; the metric's alone when single."""
        costs = ["min"] * (len(self.objectives) - 1)
        return [self.mode, *costs]

    @property
    def knob(self) -> str | None:
        """The one searched key of an ablation or comparison."""
        return None if self.kind in ("search", "tuned") else next(iter(self.search))

    def grid(self) -> dict[str, list[Any]]:
        """Every (setting, seed) pair of an ablation or comparison."""
        return {self.knob: list(self.search[self.knob]["values"]), "train.seed": self.seed_list()}

    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def trial_count(self) -> int:
        if self.kind == "search":
            return self.num_samples * self.seeds
        if self.kind == "tuned":
            return len(self.methods) * (self.num_samples + self.seeds)
        return len(self.search[self.knob]["values"]) * self.seeds

    def searches(self) -> dict[str, StudySpace]:
        """A tuned comparison's search of each method: the same budget (trials, epochs, sampler)
        over the shared ranges and the method's own, on top of its fixed keys."""
        return {
            method: StudySpace(
                name=f"{SEARCH_PREFIX}{method}",
                question=f"The best configuration of {method} on the validation classes.",
                kind="search",
                metric=self.metric,
                mode=self.mode,
                fixed={**self.fixed, **spec["fixed"]},
                search={**self.search, **spec["search"]},
                num_samples=self.num_samples,
            )
            for method, spec in self.methods.items()
        }

    def confirmation(self, best: Mapping[str, Mapping[str, Any]]) -> StudySpace:
        """A tuned comparison's second step: every method at its fixed keys and `best` searched
        values, over seeds that no search used."""
        return StudySpace(
            name=CONFIRMATION,
            question=f"{self.question}\n\nEach method at its best configuration, fresh seeds.",
            kind="compare",
            metric=self.metric,
            mode=self.mode,
            seeds=self.seeds,
            fixed=self.fixed,
            search={METHOD: {"type": "categorical", "values": list(self.methods)}},
            baseline=self.baseline,
            contrasts=self.contrasts,
            methods={
                method: {**spec["fixed"], **best[method]} for method, spec in self.methods.items()
            },
            # The searches ran seed 0: the winner's own run would carry its selection's luck.
            first_seed=1,
        )

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
    "CONTRASTS": "contrasts",
    "METHODS": "methods",
    "SCHEDULER": "scheduler",
    "NUM_SAMPLES": "num_samples",
}


def _shipped_files() -> Traversable:
    try:
        return importlib.resources.files(SPACES_PACKAGE)
    except ModuleNotFoundError:
        raise SpaceError(
            f"the {SPACES_PACKAGE} package is not installed; install the project again "
            "(pip install -e . in a checkout) so that it ships the search spaces"
        ) from None


def shipped_spaces() -> list[str]:
    """The study names of the spaces shipped in the ``search_spaces`` package, sorted."""
    return sorted(
        entry.name.removesuffix(".py")
        for entry in _shipped_files().iterdir()
        if entry.name.endswith(".py") and not entry.name.startswith("_")
    )


def load_space(name_or_path: str | Path) -> StudySpace:
    """Read and check a space by study name (``ablate_flow_depth``) or by the path of a file
    ending in ``.py``. A name is looked up in the ``search_spaces`` package, not in the current
    folder, so it resolves the same from anywhere."""
    path = Path(name_or_path)
    if path.suffix == ".py":
        if not path.is_file():
            raise SpaceError(
                f"no search space file {path} (shipped spaces, by name: "
                f"{', '.join(shipped_spaces())})"
            )
        return parse_space(path.read_text(), path.stem, source=str(path))
    name = str(name_or_path)
    resource = _shipped_files() / f"{name}.py"
    if not name.isidentifier() or name.startswith("_") or not resource.is_file():
        raise SpaceError(
            f"no search space named {name!r} (known spaces: {', '.join(shipped_spaces())}); "
            "give a study name or the path of a .py file"
        )
    return parse_space(resource.read_text(), name, source=str(resource))


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


Failure = Callable[[str], SpaceError]


def _failure(source: str) -> Failure:
    """What raises a SpaceError naming `source`."""

    def fail(message: str) -> SpaceError:
        return SpaceError(f"{source}: {message}")

    return fail


def check_space(space: StudySpace, source: str = "<space>") -> StudySpace:
    """Validate a space where it enters, before any trial starts: every value against the config
    (converted to its key's type) and the rules between the fields (`check_structure`).

    A space is checked once, as it is read (`parse_space`). A space built from a checked one (the
    command line's options applied, a round of seeds, a split, a tuned comparison's searches)
    holds checked values, and `check_structure` is all it needs.
    """
    fail = _failure(source)
    _check_fields(space, fail)
    fixed = _checked_config(space.fixed, "FIXED", fail)
    if space.kind == "tuned":
        return _check_tuned(dataclasses.replace(space, fixed=fixed), source)
    _check_knob_fields(space, fail)
    # A comparison's overrides are checked and kept as written: each trial resolves them.
    methods = {}
    if space.kind == "compare":
        for method, overrides in space.methods.items():
            _checked_config(overrides, f"METHODS[{method!r}]", fail)
            methods[method] = dict(overrides)
    search = {
        key: _check_dimension(key, dim, space.kind, methods, fail)
        for key, dim in space.search.items()
    }
    checked = dataclasses.replace(space, fixed=fixed, search=search, methods=methods)
    _check_plan(checked, fail)
    return checked


def check_structure(space: StudySpace, source: str = "<space>") -> StudySpace:
    """The rules between the fields of a space built from a checked one: nothing searched is
    also fixed, the baseline is one of the settings, a search's budget, scheduler and objectives,
    and a tuned comparison's searches are searches.

    Its values are not checked again: each was checked where it entered (`check_space`, the
    command line's `gapan.config.parse_overrides`), and a trial's config is checked once more,
    when it is resolved (`gapan.config.from_flat`).
    """
    fail = _failure(source)
    _check_fields(space, fail)
    if space.kind == "tuned":
        _tuned_methods(space, fail)
        _check_searches(space, source)
        return space
    _check_knob_fields(space, fail)
    _check_plan(space, fail)
    return space


def _check_fields(space: StudySpace, fail: Failure) -> None:
    """KIND, MODE, METRIC, SEEDS, the shape of FIXED, and CONTRASTS."""
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
    _check_contrasts(space, fail)


def _checked_config(flat: Mapping[Any, Any], field_name: str, fail: Failure) -> dict[str, Any]:
    """Config keys and values, each converted to its key's type and checked against its
    bounds (`gapan.config.coerce_value`)."""
    checked = {}
    for key, value in flat.items():
        if not isinstance(key, str):
            raise fail(f"{field_name}: config keys are strings like 'flow.depth'; got {key!r}")
        try:
            checked[key] = coerce_value(key, value)
        except ConfigError as error:
            raise fail(f"{field_name}: {error}") from None
    return checked


def _check_knob_fields(space: StudySpace, fail: Failure) -> None:
    """SEARCH, and the METHODS of a comparison (no other study has any)."""
    if not isinstance(space.search, dict) or not space.search:
        raise fail("SEARCH must be a non-empty dict of searched keys")
    if space.kind != "compare":
        if space.methods:
            raise fail("METHODS belongs to comparison studies (KIND = 'compare')")
        return
    if set(space.search) != {METHOD}:
        raise fail(f"a comparison searches {METHOD!r} only (the names in METHODS)")
    if not isinstance(space.methods, dict) or not space.methods:
        raise fail("METHODS must map method names to config overrides")
    for method, overrides in space.methods.items():
        if not isinstance(overrides, dict):
            raise fail(f"METHODS[{method!r}] must be a dict of config overrides")


def _check_plan(space: StudySpace, fail: Failure) -> None:
    """What an ablation, comparison or search runs: its knob and baseline, or its budget."""
    search = space.search
    if "train.seed" in search:
        raise fail("train.seed is set by SEEDS, not searched")
    overlap = set(search) & set(space.fixed)
    if overlap:
        raise fail(f"{', '.join(sorted(overlap))} is both FIXED and searched")
    if space.kind in ("ablation", "compare"):
        if len(search) != 1:
            raise fail("an ablation searches exactly one key (its knob)")
        knob = next(iter(search))
        if "values" not in search[knob]:
            raise fail(f"SEARCH[{knob!r}] of an ablation lists its settings under 'values'")
        if space.baseline not in search[knob]["values"]:
            raise fail(f"BASELINE {space.baseline!r} is not one of the settings of {knob!r}")
    else:
        if not isinstance(space.num_samples, int) or space.num_samples < 1:
            raise fail("a search study sets NUM_SAMPLES, a positive integer")
        if space.baseline is not None:
            raise fail("BASELINE belongs to ablations and comparisons")
        if space.seeds != 1:
            raise fail(
                "a search study runs one seed per configuration (SEEDS = 1); compare its "
                "best configurations over seeds with a comparison study"
            )
    if space.scheduler not in (None, "asha"):
        raise fail(f"SCHEDULER must be 'asha' or None; got {space.scheduler!r}")
    if space.objectives and (
        space.kind != "search" or space.objectives[0] != space.metric or space.scheduler is not None
    ):
        raise fail("objectives belong to a search without SCHEDULER, its metric first")


# What a multi-objective search can trade the metric against: name -> trials.csv column.
COST_OBJECTIVES = {"time_per_step": "time_per_step_s", "peak_gpu_memory": "peak_gpu_memory_mb"}
_METRIC_NAME = re.compile(r"(val_)?(map_at_r|r_precision|nmi|recall_at_\d+)")


def with_objectives(space: StudySpace, names: list[str]) -> StudySpace:
    """A search over `names`: a metric (``map_at_r``, searched on its validation column, in
    the space's MODE), then a cost from `COST_OBJECTIVES`, which is minimised.

    Raises:
        SpaceError: Not a search, or a name that is neither.
    """
    if space.kind != "search":
        raise SpaceError("--objectives is for search studies; ablations compare one metric")
    if len(names) != 2 or not _METRIC_NAME.fullmatch(names[0]) or names[1] not in COST_OBJECTIVES:
        raise SpaceError(
            f"--objectives {','.join(names)}: name a metric (map_at_r, r_precision, "
            f"recall_at_1, ...) and one cost ({', '.join(COST_OBJECTIVES)}), e.g. "
            "map_at_r,time_per_step"
        )
    metric, cost = names
    column = metric if metric.startswith("val_") else f"val_{metric}"
    objectives = [column, COST_OBJECTIVES[cost]]
    return dataclasses.replace(space, metric=column, objectives=objectives)


def _check_contrasts(space: StudySpace, fail: Failure) -> None:
    contrasts = space.contrasts
    if not contrasts:
        return
    if space.kind not in ("compare", "tuned"):
        raise fail("CONTRASTS belongs to comparisons (KIND = 'compare' or 'tuned')")
    if not isinstance(contrasts, dict) or not isinstance(space.methods, dict):
        raise fail("CONTRASTS must map a method to the method it is compared with")
    for method, against in contrasts.items():
        if not (isinstance(method, str) and isinstance(against, str)):
            raise fail(f"CONTRASTS: {method!r}: {against!r} must map a method name to another")
        if method not in space.methods or against not in space.methods or method == against:
            raise fail(
                f"CONTRASTS: {method!r} against {against!r} must name two different methods of "
                "METHODS"
            )


def _check_tuned(space: StudySpace, source: str) -> StudySpace:
    """A tuned comparison's values: the ranges every method searches, and each method's own
    fixed keys and ranges, each checked once; then each method's search, a search study."""
    fail = _failure(source)
    methods = _tuned_methods(space, fail)
    shared = {
        key: _check_dimension(key, dim, "search", {}, fail) for key, dim in space.search.items()
    }
    for method, spec in methods.items():
        own = _failure(f"{source}, METHODS[{method!r}]")
        methods[method] = {
            "fixed": _checked_config(spec["fixed"], "fixed", own),
            "search": {
                key: _check_dimension(key, dim, "search", {}, own)
                for key, dim in spec["search"].items()
            },
        }
    checked = dataclasses.replace(space, search=shared, methods=methods)
    _check_searches(checked, source)
    return checked


def _tuned_methods(space: StudySpace, fail: Failure) -> dict[str, dict[str, dict[str, Any]]]:
    """The fields of a tuned comparison and its METHODS, each as ``{"fixed": {...}, "search":
    {...}}``."""
    if not isinstance(space.search, dict):
        raise fail("SEARCH must be a dict of the ranges every method searches (may be empty)")
    if not isinstance(space.methods, dict) or len(space.methods) < 2:
        raise fail("METHODS must name at least two methods, each {'fixed': ..., 'search': ...}")
    if not isinstance(space.baseline, str) or space.baseline not in space.methods:
        raise fail(f"BASELINE {space.baseline!r} is not one of METHODS")
    if not isinstance(space.num_samples, int) or space.num_samples < 1:
        raise fail("NUM_SAMPLES (search trials per method) must be a positive integer")
    if space.scheduler is not None:
        raise fail("a tuned comparison gives every trial its whole budget: no SCHEDULER")
    methods = {}
    for method, spec in space.methods.items():
        if not (isinstance(method, str) and method.isidentifier()):
            raise fail(f"METHODS: {method!r} is not a name (letters, digits, _): it names a folder")
        if not (
            isinstance(spec, dict)
            and set(spec) <= {"fixed", "search"}
            and all(isinstance(part, dict) for part in spec.values())
        ):
            raise fail(f"METHODS[{method!r}] must be a dict with 'fixed' and 'search' dicts")
        spec = {"fixed": dict(spec.get("fixed", {})), "search": dict(spec.get("search", {}))}
        clash = set(spec["search"]) & set(space.search)
        if clash:
            raise fail(f"METHODS[{method!r}] searches {', '.join(sorted(clash))}, shared already")
        methods[method] = spec
    seeded = [name for name, spec in methods.items() if "train.seed" in spec["fixed"]]
    if "train.seed" in space.fixed or seeded:
        raise fail(
            "train.seed is the study's to choose in a tuned comparison (seed 0 for every "
            "search, 1 to SEEDS for the confirmation); leave it out of FIXED, METHODS and --set"
        )
    return methods


def _check_searches(space: StudySpace, source: str) -> None:
    """Each method's search of a tuned comparison is a search study (`StudySpace.searches`)."""
    for method, search in space.searches().items():
        check_structure(search, f"{source}, METHODS[{method!r}] with SEARCH")


def _check_dimension(
    key: str, dim: Any, kind: str, methods: Mapping[str, Any], fail: Failure
) -> dict[str, Any]:
    """A searched dimension of a space file: its key, its shape, and each value or bound
    against the config (a comparison's against its METHODS)."""
    if key == METHOD and kind != "compare":
        raise fail(f"SEARCH: {METHOD!r} is the knob of comparison studies (KIND = 'compare')")
    if key != METHOD and key not in config_fields():
        try:
            bounds(key)  # raises, suggesting the closest key
        except ConfigError as error:
            raise fail(f"SEARCH: the trainer has no such key: {error}") from None

    def check_value(value: Any) -> Any:
        if key == METHOD:
            try:
                known = value in methods
            except TypeError:  # unhashable, so not a method's name
                known = False
            if not known:
                raise fail(f"SEARCH[{key!r}]: {value!r} is not in METHODS")
            return _choice(key, value, fail)
        try:
            return coerce_value(key, value)
        except ConfigError as error:
            raise fail(f"SEARCH[{key!r}]: {error}") from None

    if isinstance(dim, Mapping) and "values" not in dim:
        if kind != "search":
            raise fail(f"SEARCH[{key!r}]: ablations list their settings under 'values'")
        _check_range_type(key, dim.get("type"), fail)
    return _dimension(key, dim, fail, check_value)


def _check_range_type(key: str, declared: Any, fail: Failure) -> None:
    """A range's type must be the config key's own: an int range on a float key samples whole
    numbers only, a float range on an int key samples values the trainer refuses."""
    if declared not in ("int", "float"):
        return  # _dimension names the problem
    own = bounds(key)["type"]
    if own is int and declared == "float":
        raise fail(f"SEARCH[{key!r}]: {key} is an integer key; use type 'int'")
    if own is float and declared == "int":
        raise fail(f"SEARCH[{key!r}]: {key} is not an integer key; use type 'float'")
    if own not in (int, float):
        raise fail(
            f"SEARCH[{key!r}]: {key} takes a {own.__name__}, not a number; list its settings "
            "under 'values'"
        )


def _dimension(
    key: str,
    dim: Any,
    fail: Failure,
    check_value: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """The rules every searched dimension follows whatever its study and key: the shape that
    `check_space` keeps and `optuna_distribution` reads.

    Each value or bound is checked once: by `check_value`, which may convert it (a space file's
    against the config, its type included), or, without one (plain data, such as study.json
    records), as what an Optuna distribution holds.
    """
    if not isinstance(dim, Mapping):
        raise fail(f"SEARCH[{key!r}] must be a dict like {{'type': 'int', 'values': [...]}}")
    unknown = set(dim) - set(DIMENSION_FIELDS)
    if unknown:
        raise fail(f"SEARCH[{key!r}]: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    kind_of = dim.get("type")
    if kind_of not in DIMENSION_TYPES:
        raise fail(f"SEARCH[{key!r}]['type'] must be one of {', '.join(DIMENSION_TYPES)}")

    if "values" in dim:
        if set(dim) & {"low", "high", "log"}:
            raise fail(f"SEARCH[{key!r}] gives either 'values' or 'low'/'high', not both")
        values = dim["values"]
        if not isinstance(values, list) or not values:
            raise fail(f"SEARCH[{key!r}]['values'] must be a non-empty list")
        checked = [(check_value or (lambda value: _choice(key, value, fail)))(v) for v in values]
        if len(set(map(repr, checked))) != len(checked):
            raise fail(f"SEARCH[{key!r}]['values'] repeats a value")
        return {"type": kind_of, "values": checked}
    if kind_of == "categorical":
        raise fail(f"SEARCH[{key!r}]: a categorical dimension lists its 'values'")
    if "low" not in dim or "high" not in dim:
        raise fail(f"SEARCH[{key!r}] needs 'low' and 'high' (or 'values')")
    check_bound = check_value or (lambda value: _bound(key, value, kind_of, fail))
    low, high = check_bound(dim["low"]), check_bound(dim["high"])
    if not low < high:
        raise fail(f"SEARCH[{key!r}]: low must be below high; got {low} and {high}")
    log = dim.get("log", False)
    if not isinstance(log, bool):
        raise fail(f"SEARCH[{key!r}]['log'] must be True or False")
    if log and not low > 0:
        raise fail(f"SEARCH[{key!r}]: a log scale needs low > 0")
    return {"type": kind_of, "low": low, "high": high, "log": log}


def _choice(key: str, value: Any, fail: Failure) -> Any:
    """A value of a categorical dimension: what an Optuna categorical distribution holds."""
    if value is not None and not isinstance(value, bool | int | float | str):
        raise fail(f"SEARCH[{key!r}]: {value!r} is not a number, string, bool or None")
    return value


def _bound(key: str, value: Any, kind_of: str, fail: Failure) -> int | float:
    """A range's bound as plain data: an integer of an int range, a finite number (as a float)
    of a float range."""
    number = int if kind_of == "int" else int | float
    if isinstance(value, bool) or not isinstance(value, number):
        noun = "integers" if kind_of == "int" else "numbers"
        raise fail(f"SEARCH[{key!r}]: 'low' and 'high' must be {noun}; got {value!r}")
    if kind_of == "int":
        return value
    try:
        value = float(value)
    except OverflowError:
        raise fail(f"SEARCH[{key!r}]: bounds must be finite") from None
    if not math.isfinite(value):
        raise fail(f"SEARCH[{key!r}]: bounds must be finite")
    return value


def optuna_distribution(
    key: str, dimension: Mapping[str, Any], source: str = "<space>"
) -> BaseDistribution:
    """The Optuna distribution of one searched dimension as plain data, as study.json records it.

    ``{"type": ..., "values": [...]}`` becomes a categorical distribution (whatever the type);
    ``{"type": "int", "low", "high", "log"?}`` an `IntDistribution` and ``{"type": "float",
    ...}`` a `FloatDistribution`. The rules are `check_space`'s, less those that need the config
    (the key, its type and its bounds): what a study was checked by is what its report reads.

    Args:
        key: The flat config key (or ``"method"``), for messages.
        dimension: The dimension as plain data.
        source: Where the dimension comes from, for messages.

    Raises:
        SpaceError: A dimension `check_space` would refuse whatever the key; the message names
            the key and the field.
    """
    return _distribution(_dimension(key, dimension, _failure(source)))


def _distribution(dimension: Mapping[str, Any]) -> BaseDistribution:
    """The Optuna distribution of a checked dimension."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if "values" in dimension:
        return CategoricalDistribution(dimension["values"])
    if dimension["type"] == "int":
        return IntDistribution(dimension["low"], dimension["high"], log=dimension["log"])
    return FloatDistribution(dimension["low"], dimension["high"], log=dimension["log"])


def optuna_distributions(space: StudySpace) -> dict[str, BaseDistribution]:
    """The searched dimensions of a checked space as Optuna distributions (for OptunaSearch),
    with the seeds of an ablation or comparison as one more categorical dimension."""
    from optuna.distributions import CategoricalDistribution

    out = {key: _distribution(dim) for key, dim in space.search.items()}
    if space.kind != "search":
        out["train.seed"] = CategoricalDistribution(space.seed_list())
    return out
