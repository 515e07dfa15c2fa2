"""What a study run is asked for: `StudyOptions` (the scripts' flags) applied to a search space."""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gapan.config import ModelConfig
from gapan.results import KEEP_POLICIES
from gapan.space import COST_OBJECTIVES, StudySpace, check_structure, with_objectives

MAX_SPLITS = 100


class StudyError(RuntimeError):
    """A study that cannot start or resume; the message says what to do."""


class StudyUnfinished(StudyError):
    """A study (or a part of one) stopped before all its trials ended, interrupted; what ended
    is written, and --resume runs the rest."""


def flag(group: str, help: str | None = None, **argparse: Any) -> dict[str, Any]:
    """A `StudyOptions` field's command-line flag: its group in --help, its help text and any
    other `add_argument` keyword (`gapan.tune.cli` builds the flags from these)."""
    return {"flag": {"group": group, "help": help, **argparse}}


def seeds_flag(text: str) -> int | str:
    """--seeds: a whole number, or auto (adaptive seeds)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of seeds or auto, not {text!r}") from None


def names_flag(text: str) -> tuple[str, ...]:
    """A comma-separated list of names."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


# Flags that only adaptive seeds (--seeds auto) read; the command line refuses them otherwise.
ADAPTIVE = "adaptive"


@dataclass(frozen=True)
class StudyOptions:
    """How to run a study: where, on what, and with which resources. Each field with a flag is
    the study scripts' flag of the same name (`--cpus-per-trial` for `cpus_per_trial`)."""

    name: str = field(metadata=flag("study", "the study folder's name"))
    results_dir: Path = field(default=Path("results"), metadata=flag("study", type=Path))
    storage: str | None = field(
        default=None,
        metadata=flag("study", "a shared folder for results on a multi-node cluster"),
    )
    # Config keys set for every trial, on top of the space's FIXED (dataset, backbone mode...);
    # the command line's data and model flags.
    overrides: dict[str, Any] = field(default_factory=dict)
    gpus_per_trial: float = field(
        default=0.0,
        metadata=flag(
            "resources", "GPUs per trial; fractions pack several trials on one GPU", type=float
        ),
    )
    cpus_per_trial: float = field(default=1.0, metadata=flag("resources", type=float))
    max_concurrent: int = field(
        default=0,
        metadata=flag(
            "resources", "trials at once (default: as many as the resources allow)", type=int
        ),
    )
    address: str | None = field(
        default=None,
        metadata=flag("resources", "join a running Ray cluster (auto, or HOST:PORT)"),
    )
    num_cpus: int | None = field(
        default=None,
        metadata=flag("resources", "CPUs of the Ray instance started here", type=int),
    )
    num_samples: int | None = field(
        default=None, metadata=flag("study", "trials of a search study", type=int)
    )
    # Earlier studies whose best configurations start a search (`gapan.tune.warm_start`).
    warm_start: tuple[Path, ...] = field(
        default=(),
        metadata=flag(
            "study",
            "a search (or each search of a tuned comparison) starts with the best "
            "configurations of this earlier study's results folder, often a cheaper one (frozen "
            "features); repeatable. They run at this study's fidelity and count in its trials",
            type=Path,
            action="append",
            metavar="FOLDER",
        ),
    )
    sampler_seed: int = field(
        default=0,
        metadata=flag("study", "the seed of a search's sampler (default 0)", type=int),
    )
    # A multi-objective search: a metric and costs (`gapan.space.with_objectives`).
    objectives: tuple[str, ...] = field(
        default=(),
        metadata=flag(
            "study",
            "a multi-objective search: a metric, then a cost to minimise (one of "
            f"{', '.join(COST_OBJECTIVES)}), e.g. map_at_r,time_per_step; the report shows the "
            "Pareto front",
            type=names_flag,
        ),
    )
    # Ablations and comparisons: seeds per setting (the command line's --seeds auto sets
    # `adaptive` instead).
    seeds: int | None = field(
        default=None,
        metadata=flag(
            "study",
            "seeds per setting of an ablation, or auto: rounds of one more seed for the "
            "settings whose comparison with the baseline is undecided (group-sequential tests)",
            type=seeds_flag,
        ),
    )
    # The study replicated on this many family-disjoint class splits (data.split_seed 0..K-1),
    # each in a folder of its own (`gapan.tune.splits`); 1: the data set's own split only.
    splits: int = field(
        default=1,
        metadata=flag(
            "study",
            "run the whole study on this many family-disjoint class splits of the embedded "
            "set (data.split_seed 0, 1, ...; 0 is its own split), each in split_<k>/; the "
            "report shows whether each answer holds on every split (default 1)",
            type=int,
        ),
    )
    # Adaptive seeds (ablations and comparisons): rounds of one more seed for every setting whose
    # comparison with the baseline is undecided (gapan/tune/adaptive.py, gapan/sequential.py).
    adaptive: bool = False
    min_seeds: int = field(
        default=3,
        metadata=flag(
            "study", "--seeds auto: seeds of the first round (default 3)", type=int, only=ADAPTIVE
        ),
    )
    max_seeds: int = field(
        default=10,
        metadata=flag(
            "study", "--seeds auto: the most seeds (default 10)", type=int, only=ADAPTIVE
        ),
    )
    precision: float = field(
        default=0.0,
        metadata=flag(
            "study",
            "--seeds auto: a comparison whose interval is narrower than +- this (in the "
            "metric's units, e.g. 0.01) takes no more seeds: precise enough, not decided (only "
            "the equivalence test, --equivalence-margin, which defaults to this, says "
            "equivalent); default 0: only an interval excluding zero stops a comparison",
            type=float,
            only=ADAPTIVE,
        ),
    )
    # Reports call a comparison equivalent when its (1 - 2 alpha / k) intervals, k settings
    # compared, lie inside +- this (in the metric's units); None: the precision of adaptive
    # seeds, else no equivalence test.
    equivalence_margin: float | None = field(
        default=None,
        metadata=flag(
            "study",
            "report a setting as equivalent to the baseline when its (1 - 2 alpha / k) "
            "intervals, k settings compared, lie inside +- this (two one-sided tests, in the "
            "metric's units, e.g. 0.01); default: --precision with --seeds auto, else no "
            "equivalence test",
            type=float,
        ),
    )
    budget_minutes: float | None = field(
        default=None,
        metadata=flag(
            "study",
            "--seeds auto: start no new round after this many minutes of this run (with "
            "--splits, of each split's)",
            type=float,
            only=ADAPTIVE,
        ),
    )
    max_failures: int = field(
        default=1,
        metadata=flag(
            "study",
            "retries of a trial that raised, each from its last checkpoint (a non-finite loss "
            "or a GPU out of memory is recorded, not retried)",
            type=int,
        ),
    )
    # What stays of a trial once it ended (`gapan.results.KEEP_POLICIES`).
    keep_checkpoints: str = field(
        default="best",
        metadata=flag(
            "study",
            "what stays of a trial once it ended: best (default), the final weights of the "
            "best trial of each setting (of a search: the best trial); last, those of every "
            "completed trial; none. Tune's checkpoints (and their optimizer state) go either "
            "way; unfinished trials keep theirs for --resume. python -m gapan.export makes a "
            "kept trial a model folder",
            choices=KEEP_POLICIES,
        ),
    )
    resume: bool = field(
        default=False,
        metadata=flag(
            "study",
            "continue an interrupted study: finished trials are kept; with a larger "
            "--num-samples, extend a finished search",
            action="store_true",
        ),
    )
    smoke: bool = field(
        default=False,
        metadata=flag(
            "study",
            "a tiny version to check the set-up: 2 epochs on 24 classes; an ablation or "
            "comparison runs 2 settings x 2 seeds, a search 4 trials, a tuned comparison 2 "
            "search trials per method and 2 seeds (adaptive seeds: 2, then at most 3)",
            action="store_true",
        ),
    )
    dashboard_host: str = field(
        default="127.0.0.1",
        metadata=flag(
            "study",
            "where the Ray dashboard listens (default: this machine only; reach it from "
            "elsewhere through an SSH tunnel)",
        ),
    )
    dashboard_port: int = field(default=8265, metadata=flag("study", type=int))

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
        if margin is not None and not (_is_number(margin) and margin > 0):
            raise StudyError(
                f"--equivalence-margin must be a positive number in the metric's units (e.g. "
                f"0.01 for MAP@R); got {margin!r}"
            )
        self._check_numbers()

    def _check_numbers(self) -> None:
        """Refuse a number no study can run with, before Ray starts or a file is written."""
        wrong = [
            f"{flag} must be {meaning}; got {value!r}"
            for flag, value, fits, meaning in (
                (
                    "--cpus-per-trial",
                    self.cpus_per_trial,
                    _is_number(self.cpus_per_trial) and self.cpus_per_trial > 0,
                    "more than 0 (every trial runs on a CPU)",
                ),
                (
                    "--gpus-per-trial",
                    self.gpus_per_trial,
                    _is_number(self.gpus_per_trial)
                    and self.gpus_per_trial >= 0
                    and (self.gpus_per_trial <= 1 or float(self.gpus_per_trial).is_integer()),
                    "0, a fraction of one GPU, or a whole number of GPUs",
                ),
                (
                    "--max-concurrent",
                    self.max_concurrent,
                    _is_whole(self.max_concurrent, 0),
                    "a whole number, 0 for as many as the resources allow",
                ),
                (
                    "--num-samples",
                    self.num_samples,
                    self.num_samples is None or _is_whole(self.num_samples, 1),
                    "a whole number of trials, at least 1",
                ),
                (
                    "--seeds",
                    self.seeds,
                    self.seeds is None or _is_whole(self.seeds, 1),
                    "a whole number of seeds, at least 1, or auto",
                ),
                (
                    "--max-failures",
                    self.max_failures,
                    _is_whole(self.max_failures, 0),
                    "a whole number of retries, 0 or more",
                ),
                (
                    "--sampler-seed",
                    self.sampler_seed,
                    _is_whole(self.sampler_seed, 0),
                    "a whole number, 0 or more",
                ),
                (
                    "--num-cpus",
                    self.num_cpus,
                    self.num_cpus is None or _is_whole(self.num_cpus, 1),
                    "a whole number of CPUs, at least 1",
                ),
                (
                    "--dashboard-port",
                    self.dashboard_port,
                    _is_whole(self.dashboard_port, 0) and self.dashboard_port <= 65535,
                    "a port from 1 to 65535 (0: any free port)",
                ),
                (
                    "--precision",
                    self.precision,
                    _is_number(self.precision) and self.precision >= 0,
                    "0 or a positive number in the metric's units",
                ),
                (
                    "--budget-minutes",
                    self.budget_minutes,
                    self.budget_minutes is None
                    or (_is_number(self.budget_minutes) and self.budget_minutes > 0),
                    "a positive number of minutes",
                ),
            )
            if not fits
        ]
        if self.adaptive and not (
            _is_whole(self.min_seeds, 2)
            and _is_whole(self.max_seeds, 2)
            and self.min_seeds <= self.max_seeds
        ):
            wrong.append(
                "--min-seeds and --max-seeds must be whole numbers with 2 <= --min-seeds <= "
                f"--max-seeds (a paired t-test needs 2 pairs); got {self.min_seeds!r} and "
                f"{self.max_seeds!r}"
            )
        if wrong:
            raise StudyError("; ".join(wrong))

    @property
    def reporting(self) -> dict[str, Any]:
        """What study.json records for the report beside the space: the equivalence margin."""
        if self.equivalence_margin is None:
            return {}
        return {"equivalence_margin": self.equivalence_margin}

    @property
    def study_dir(self) -> Path:
        return (Path(self.storage) if self.storage else self.results_dir).resolve() / self.name


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_whole(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


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


# Searched keys that act only where the backbone trains, by the backbone modes where they do not.
IDLE_WHEN = {"optim.backbone_lr": ("frozen",)}


def without_idle_dimensions(space: StudySpace) -> StudySpace:
    """The space without the searched keys that do nothing under its fixed settings (the
    backbone's learning rate on cached features): a sampler would spend trials learning noise
    in them."""
    mode = space.fixed.get("model.backbone_mode", ModelConfig().backbone_mode)
    idle = {key for key, modes in IDLE_WHEN.items() if mode in modes and key in space.search}
    if not idle:
        return space
    return dataclasses.replace(
        space, search={key: dim for key, dim in space.search.items() if key not in idle}
    )


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
    if options.warm_start and space.kind not in ("search", "tuned"):
        raise StudyError(
            f"--warm-start seeds a search's sampler; {space.name} runs a fixed grid of settings "
            f"(a {space.kind} study), which no sampler picks: run it without --warm-start"
        )
    space = dataclasses.replace(space, fixed={**space.fixed, **options.overrides})
    space = without_idle_dimensions(space)
    if options.objectives:
        space = with_objectives(space, list(options.objectives))
        if "peak_gpu_memory_mb" in space.objectives and options.gpus_per_trial <= 0:
            raise StudyError("--objectives ...,peak_gpu_memory needs trials on GPUs")
        if space.scheduler is not None:
            # ASHA stops trials on one metric; a Pareto front needs every trial's whole cost.
            print("--objectives: every trial runs to its end (no early stopping)", flush=True)
            space = dataclasses.replace(space, scheduler=None)
    return check_structure(space, source=f"{space.name} with the command-line options")
