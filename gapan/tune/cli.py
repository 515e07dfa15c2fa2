"""The command line every study script shares: flags, one study run, its report.

The flags are parsed before anything heavy is imported, so `--help` and a mistyped flag answer at
once; torch, Ray and the data loaders load only for a run.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Any

from gapan.config import BACKBONE_MODES, DATASETS, ConfigError, parse_overrides
from gapan.space import SpaceError, load_space
from gapan.tune.options import ADAPTIVE, StudyOptions


def study_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The flags of the study `name`: the data and model flags (config keys for every trial),
    then one flag per `StudyOptions` field that declares one, in its group."""
    parser = argparse.ArgumentParser(
        prog=f"python studies/{name}.py",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _data_flags(parser.add_argument_group("data and model"))
    groups = {title: parser.add_argument_group(title) for title in ("resources", "study")}
    for option in dataclasses.fields(StudyOptions):
        spec = dict(option.metadata.get("flag") or {})
        if not spec:
            continue
        group = groups[spec.pop("group")]
        if spec.pop("only", None) == ADAPTIVE:
            default = None  # so that the command line sees whether it was given
        elif option.name == "name":
            default = name
        elif spec.get("action") == "append":
            default = []
        else:
            default = option.default
        group.add_argument(f"--{option.name.replace('_', '-')}", default=default, **spec)
    groups["study"].add_argument("--no-report", action="store_true", help="skip the HTML report")
    return parser


def _data_flags(data: argparse._ArgumentGroup) -> None:
    data.add_argument("--dataset", help=DATASETS.describe())
    data.add_argument("--data-root", help="the data set folder (wesnoth: prepared cache)")
    data.add_argument("--backbone", help="a timm model name (default mobilenetv2_100)")
    data.add_argument("--pretrained", help="none, a weight file, timm, or a weight package")
    data.add_argument(
        "--backbone-mode",
        choices=BACKBONE_MODES.names,
        help=BACKBONE_MODES.describe(),
    )
    data.add_argument("--epochs", type=int)
    data.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="any other config key for every trial, e.g. --set data.image_size=128",
    )


def options_from(args: argparse.Namespace) -> dict[str, Any]:
    """`StudyOptions`' arguments from the parsed flags: --seeds auto as adaptive seeds, the
    adaptive flags only where given, and the data and model flags as config overrides."""
    values: dict[str, Any] = {"overrides": overrides_from(args)}
    for option in dataclasses.fields(StudyOptions):
        spec = option.metadata.get("flag")
        if spec is None:
            continue
        value = getattr(args, option.name)
        if spec.get("only") == ADAPTIVE and value is None:
            continue
        values[option.name] = tuple(value) if isinstance(value, list) else value
    if values.get("seeds") == "auto":
        values.update(seeds=None, adaptive=True)
    return values


def adaptive_flags_given(args: argparse.Namespace) -> list[str]:
    """The flags given that only adaptive seeds read."""
    return [
        f"--{option.name.replace('_', '-')}"
        for option in dataclasses.fields(StudyOptions)
        if (option.metadata.get("flag") or {}).get("only") == ADAPTIVE
        and getattr(args, option.name) is not None
    ]


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
    given = adaptive_flags_given(args)
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
    from gapan.tune import StudyError, run_study
    from gapan.tune.options import StudyUnfinished

    try:
        options = StudyOptions(**options_from(args))
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
