"""What a study run is asked for: `StudyOptions` (the scripts' flags) applied to a search space."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gapan.results import KEEP_POLICIES
from gapan.space import StudySpace, check_space, with_objectives

MAX_SPLITS = 100


class StudyError(RuntimeError):
    """A study that cannot start or resume; the message says what to do."""


@dataclass(frozen=True)
class StudyOptions:
    """How to run a study: where, on what, and with which resources (the scripts' flags)."""

    name: str
    results_dir: Path = Path("results")
    # Config keys set for every trial, on top of the space's FIXED (dataset, backbone mode...).
    overrides: dict[str, Any] = field(default_factory=dict)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0  # 0: as many as the resources allow
    num_samples: int | None = None  # search studies: trials to sample
    seeds: int | None = None  # ablations and comparisons: seeds per setting
    # Adaptive seeds (ablations and comparisons): rounds of one more seed for every setting whose
    # comparison with the baseline is undecided (gapan/tune/adaptive.py, gapan/sequential.py).
    adaptive: bool = False
    min_seeds: int = 3
    max_seeds: int = 10
    precision: float = 0.0  # no more seeds once the interval is narrower than +- this; 0: never
    budget_minutes: float | None = None  # no new round starts after this much of the run
    # Reports call a comparison equivalent when its (1 - 2 alpha / k) intervals, k settings
    # compared, lie inside +- this (in the metric's units); None: the precision of adaptive
    # seeds, else no equivalence test.
    equivalence_margin: float | None = None
    # A multi-objective search: a metric and costs (`gapan.space.with_objectives`).
    objectives: tuple[str, ...] = ()
    address: str | None = None  # join a running Ray cluster ("auto" or host:port)
    storage: str | None = None  # shared folder for a multi-node study (default: results_dir)
    resume: bool = False
    smoke: bool = False  # a tiny version of the study, to check that everything runs
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8265
    max_failures: int = 1  # retries of a failed trial, from its last checkpoint
    num_cpus: int | None = None  # CPUs of a Ray instance started here (default: all)
    # What stays of a trial once it ended (`gapan.results.KEEP_POLICIES`): the final weights of
    # the best trial of each setting, of every completed trial, or of none.
    keep_checkpoints: str = "best"
    # The study replicated on this many family-disjoint class splits (data.split_seed 0..K-1),
    # each in a folder of its own (`gapan.tune.splits`); 1: the data set's own split only.
    splits: int = 1

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.keep_checkpoints not in KEEP_POLICIES:
            raise StudyError(
                f"--keep-checkpoints must be one of {', '.join(KEEP_POLICIES)}; got "
                f"{self.keep_checkpoints!r}"
            )
        if not (isinstance(self.splits, int) and 1 <= self.splits <= MAX_SPLITS):
            raise StudyError(
                f"--splits must be a whole number from 1 to {MAX_SPLITS}; got {self.splits!r}"
            )
        margin = self.equivalence_margin
        if margin is not None and not (margin > 0 and margin != float("inf")):
            raise StudyError(
                f"--equivalence-margin must be a positive number in the metric's units (e.g. "
                f"0.01 for MAP@R); got {margin!r}"
            )

    @property
    def reporting(self) -> dict[str, Any]:
        """What study.json records for the report beside the space: the equivalence margin."""
        if self.equivalence_margin is None:
            return {}
        return {"equivalence_margin": self.equivalence_margin}

    @property
    def study_dir(self) -> Path:
        return (Path(self.storage) if self.storage else self.results_dir).resolve() / self.name


def check_name(name: str) -> None:
    """A study name is one folder name inside the results folder, never a path out of it."""
    if (
        not name.strip()
        or name in (".", "..")
        or any(separator in name for separator in ("/", "\\", "\0"))
        or name.startswith("~")
    ):
        raise StudyError(
            f"--name {name!r} is not a folder name: a study's name must be one non-empty folder "
            "name without '/', '\\' or '..', such as ablate_flow_depth_v2; --results-dir "
            "chooses where its folder goes"
        )


def smoke_space(space: StudySpace) -> StudySpace:
    """Two settings (the baseline first), two seeds, two epochs, a small slice of classes; a
    search samples four trials, and a tuned comparison searches two per method."""
    fixed = {**space.fixed, "train.epochs": 2, "data.max_classes": 24}
    if space.kind == "tuned":  # every method, searched and confirmed at the smallest size
        return dataclasses.replace(space, fixed=fixed, num_samples=2, seeds=2)
    if space.kind == "search":
        return dataclasses.replace(space, fixed=fixed, num_samples=4)
    knob = space.knob
    values = space.search[knob]["values"]
    kept = [space.baseline, *[v for v in values if v != space.baseline][:1]]
    search = {knob: {**space.search[knob], "values": kept}}
    contrasts = {a: b for a, b in space.contrasts.items() if a in kept and b in kept}
    return dataclasses.replace(space, fixed=fixed, search=search, seeds=2, contrasts=contrasts)


def apply_options(space: StudySpace, options: StudyOptions) -> StudySpace:
    """The space as this run executes it: smoke slicing, seed and sample counts, overrides."""
    if options.smoke:
        space = smoke_space(space)
    if options.seeds is not None and space.kind != "search":
        space = dataclasses.replace(space, seeds=options.seeds)
    if options.num_samples is not None and space.kind in ("search", "tuned"):
        space = dataclasses.replace(space, num_samples=options.num_samples)
    searched = set(options.overrides) & {
        *space.search,
        *(key for spec in space.methods.values() if "search" in spec for key in spec["search"]),
    }
    if searched:
        raise StudyError(
            f"{', '.join(sorted(searched))} is searched by this study; it cannot "
            "also be set on the command line"
        )
    space = dataclasses.replace(space, fixed={**space.fixed, **options.overrides})
    if options.objectives:
        space = with_objectives(space, list(options.objectives))
        if "peak_gpu_memory_mb" in space.objectives and options.gpus_per_trial <= 0:
            raise StudyError("--objectives ...,peak_gpu_memory needs trials on GPUs")
        if space.scheduler is not None:
            # ASHA stops trials on one metric; a Pareto front needs every trial's whole cost.
            print("--objectives: every trial runs to its end (no early stopping)", flush=True)
            space = dataclasses.replace(space, scheduler=None)
    return check_space(space, source=f"{space.name} with the command-line options")
