"""The command line every study script shares: flags, one study run, its report.

The flags are parsed before anything heavy is imported, so `--help` and a mistyped flag answer at
once; torch, Ray and the data loaders load only for a run.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from gapan.config import ConfigError, parse_overrides
from gapan.results import KEEP_POLICIES
from gapan.space import COST_OBJECTIVES, SpaceError, load_space


def study_parser(name: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python studies/{name}.py",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = parser.add_argument_group("data and model")
    data.add_argument("--dataset", help="wesnoth (default), cub, cars, sop, inshop or folder")
    data.add_argument("--data-root", help="the data set folder (wesnoth: prepared cache)")
    data.add_argument("--backbone", help="a timm model name (default mobilenetv2_100)")
    data.add_argument("--pretrained", help="none, a weight file, timm, or a weight package")
    data.add_argument(
        "--backbone-mode",
        choices=["frozen", "partial", "finetune"],
        help="frozen: cached features (default); partial: the last model.trainable_blocks "
        "stages train on cached maps of the lower ones; finetune: end to end",
    )
    data.add_argument("--epochs", type=int)
    data.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="any other config key for every trial, e.g. --set data.image_size=128",
    )
    run = parser.add_argument_group("resources")
    run.add_argument(
        "--gpus-per-trial",
        type=float,
        default=0.0,
        help="GPUs per trial; fractions pack several trials on one GPU",
    )
    run.add_argument("--cpus-per-trial", type=float, default=1.0)
    run.add_argument(
        "--max-concurrent",
        type=int,
        default=0,
        help="trials at once (default: as many as the resources allow)",
    )
    run.add_argument("--address", help="join a running Ray cluster (auto, or HOST:PORT)")
    run.add_argument("--num-cpus", type=int, help="CPUs of the Ray instance started here")
    study = parser.add_argument_group("study")
    study.add_argument("--name", default=name, help="the study folder's name")
    study.add_argument("--results-dir", type=Path, default=Path("results"))
    study.add_argument("--storage", help="a shared folder for results on a multi-node cluster")
    study.add_argument("--num-samples", type=int, help="trials of a search study")
    study.add_argument(
        "--warm-start",
        type=Path,
        action="append",
        default=[],
        metavar="FOLDER",
        help="a search (or each search of a tuned comparison) starts with the best "
        "configurations of this earlier study's results folder, often a cheaper one (frozen "
        "features); repeatable. They run at this study's fidelity and count in its trials",
    )
    study.add_argument(
        "--sampler-seed",
        type=int,
        default=0,
        help="the seed of a search's sampler (default 0)",
    )
    study.add_argument(
        "--objectives",
        type=lambda text: tuple(name.strip() for name in text.split(",") if name.strip()),
        default=(),
        help="a multi-objective search: a metric, then a cost to minimise (one of "
        f"{', '.join(COST_OBJECTIVES)}), e.g. map_at_r,time_per_step; the report shows the "
        "Pareto front",
    )
    study.add_argument(
        "--seeds",
        type=_seeds,
        help="seeds per setting of an ablation, or auto: rounds of one more seed for the "
        "settings whose comparison with the baseline is undecided (group-sequential tests)",
    )
    study.add_argument(
        "--splits",
        type=int,
        default=1,
        help="run the whole study on this many family-disjoint class splits of the embedded "
        "set (data.split_seed 0, 1, ...; 0 is its own split), each in split_<k>/; the report "
        "shows whether each answer holds on every split (default 1)",
    )
    study.add_argument(
        "--min-seeds", type=int, help="--seeds auto: seeds of the first round (default 3)"
    )
    study.add_argument("--max-seeds", type=int, help="--seeds auto: the most seeds (default 10)")
    study.add_argument(
        "--precision",
        type=float,
        help="--seeds auto: a comparison whose interval is narrower than +- this (in the "
        "metric's units, e.g. 0.01) takes no more seeds: precise enough, not decided (only "
        "the equivalence test, --equivalence-margin, which defaults to this, says "
        "equivalent); default 0: only an interval excluding zero stops a comparison",
    )
    study.add_argument(
        "--equivalence-margin",
        type=float,
        help="report a setting as equivalent to the baseline when its (1 - 2 alpha / k) "
        "intervals, k settings compared, lie inside +- this (two one-sided tests, in the "
        "metric's units, e.g. 0.01); default: --precision with --seeds auto, else no "
        "equivalence test",
    )
    study.add_argument(
        "--budget-minutes",
        type=float,
        help="--seeds auto: start no new round after this many minutes of this run (with "
        "--splits, of each split's)",
    )
    study.add_argument(
        "--max-failures",
        type=int,
        default=1,
        help="retries of a trial that raised, each from its last checkpoint (a "
        "non-finite loss or a GPU out of memory is recorded, not retried)",
    )
    study.add_argument(
        "--keep-checkpoints",
        choices=KEEP_POLICIES,
        default="best",
        help="what stays of a trial once it ended: best (default), the final weights of the "
        "best trial of each setting (of a search: the best trial); last, those of every "
        "completed trial; none. Tune's checkpoints (and their optimizer state) go either way; "
        "unfinished trials keep theirs for --resume. python -m gapan.export makes a kept trial "
        "a model folder",
    )
    study.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted study: finished trials are kept",
    )
    study.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny version to check the set-up: 2 epochs on 24 classes; an ablation or "
        "comparison runs 2 settings x 2 seeds, a search 4 trials, a tuned comparison 2 search "
        "trials per method and 2 seeds (adaptive seeds: 2, then at most 3)",
    )
    study.add_argument(
        "--dashboard-host",
        default="127.0.0.1",
        help="where the Ray dashboard listens (default: this machine only; "
        "reach it from elsewhere through an SSH tunnel)",
    )
    study.add_argument("--dashboard-port", type=int, default=8265)
    study.add_argument("--no-report", action="store_true", help="skip the HTML report")
    return parser


def _adaptive_flags(args: argparse.Namespace) -> dict[str, object]:
    return {
        "--min-seeds": args.min_seeds,
        "--max-seeds": args.max_seeds,
        "--precision": args.precision,
        "--budget-minutes": args.budget_minutes,
    }


def _seeds(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of seeds or auto, not {text!r}") from None


def overrides_from(args: argparse.Namespace) -> dict:
    flat = parse_overrides(args.set)
    named = {
        "data.name": args.dataset,
        "data.root": args.data_root,
        "model.backbone": args.backbone,
        "model.pretrained": args.pretrained,
        "model.backbone_mode": args.backbone_mode,
        "train.epochs": args.epochs,
    }
    flat.update(parse_overrides([f"{k}={v}" for k, v in named.items() if v is not None]))
    if args.gpus_per_trial > 0:
        flat.setdefault("train.device", "cuda")
    return flat


def resume_command(name: str, argv: list[str] | None) -> str:
    """The command that ran this study, with --resume: what continues it."""
    words = list(sys.argv[1:] if argv is None else argv)
    if "--resume" not in words:
        words.append("--resume")
    return shlex.join(["python", f"studies/{name}.py", *words])


def tensorboard_dir(study_dir: Path) -> str:
    """Where TensorBoard finds the study's event files for good (Ray names a session folder that
    is gone after a reboot): its Tune folder, or the study's folder when its parts hold them."""
    logdir = study_dir / "tune" if (study_dir / "tune").is_dir() else study_dir
    try:
        return str(logdir.relative_to(Path.cwd()))
    except ValueError:
        return str(logdir)


def run_study_script(name: str, description: str, argv: list[str] | None = None) -> int:
    """Parse the flags, run the study named `name`, write its report; return an exit code."""
    parser = study_parser(name, description)
    args = parser.parse_args(argv)
    adaptive = args.seeds == "auto"
    given = [flag for flag, value in _adaptive_flags(args).items() if value is not None]
    if given and not adaptive:
        parser.error(f"{', '.join(given)} go with --seeds auto")
    overridden = [flag for flag in ("--min-seeds", "--max-seeds") if flag in given]
    if args.smoke and adaptive and overridden:
        print(
            f"--smoke: adaptive seeds take 2 seeds, then at most 3; {' and '.join(overridden)} "
            "are checked but not used",
            flush=True,
        )
    from gapan.data import DataError
    from gapan.tune import StudyError, StudyOptions, run_study
    from gapan.tune.options import StudyUnfinished

    try:
        options = StudyOptions(
            name=args.name,
            results_dir=args.results_dir,
            overrides=overrides_from(args),
            cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial,
            max_concurrent=args.max_concurrent,
            num_samples=args.num_samples,
            seeds=None if adaptive else args.seeds,
            adaptive=adaptive,
            **{
                name.removeprefix("--").replace("-", "_"): value
                for name, value in _adaptive_flags(args).items()
                if value is not None
            },
            objectives=args.objectives,
            equivalence_margin=args.equivalence_margin,
            address=args.address,
            storage=args.storage,
            resume=args.resume,
            smoke=args.smoke,
            dashboard_host=args.dashboard_host,
            dashboard_port=args.dashboard_port,
            max_failures=args.max_failures,
            num_cpus=args.num_cpus,
            keep_checkpoints=args.keep_checkpoints,
            splits=args.splits,
            warm_start=tuple(args.warm_start),
            sampler_seed=args.sampler_seed,
        )
        study_dir = run_study(load_space(name), options)
    except StudyUnfinished as error:
        print(f"stopped: {error}\n  to continue: {resume_command(name, argv)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Where Tune is not running: data preparation, between two parts of a study.
        print(
            "stopped (Ctrl-C): what ended is kept; to continue: "
            f"{resume_command(name, argv)} (a study stopped before its first trial starts "
            "afresh without --resume)",
            file=sys.stderr,
        )
        return 130
    except (ConfigError, SpaceError, DataError, StudyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"results: {study_dir}")
    print(f"training curves: tensorboard --logdir {tensorboard_dir(study_dir)}")
    if not args.no_report:
        from reports import build_report
        from reports.load import ResultsError

        try:
            report = build_report(study_dir, on_note=lambda note: print(f"warning: {note}"))
        except (ResultsError, OSError) as error:
            print(
                f"error: the study's results are kept in {study_dir}, but its report could not "
                f"be built: {error}",
                file=sys.stderr,
            )
            return 2
        print(f"report: {report}")
    return 0
