"""Turn a finished study's folder into what a checkpoint policy keeps (``gapan.tune.prune``).

    python -m gapan.tune.prune results/ablate_flow_depth --keep-checkpoints best

For studies run before ``--keep-checkpoints`` existed (every trial kept its last three Tune
checkpoints, optimizer state included), or to keep less than a study kept: the final weights of
the trials the policy keeps go to ``models/<trial_id>/`` (gapan/tune/checkpoints.py), and every
Tune checkpoint goes. A policy cannot bring back weights already deleted. A study that is
unfinished or running is refused: its checkpoints are what ``--resume`` continues from.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from gapan import results
from gapan.tune.lock import StudyLocked, describe, running_driver, study_lock


class PruneError(ValueError):
    """A folder that must not be pruned; the message says why."""


def _planned_trials(study: dict) -> int:
    from gapan.space import StudySpace

    names = {field.name for field in dataclasses.fields(StudySpace)}
    return StudySpace(**{key: value for key, value in study.items() if key in names}).trial_count()


def _check_finished(study_dir: Path, study: dict) -> None:
    table = study_dir / results.TRIALS_FILE
    if not table.is_file():
        raise PruneError(
            f"{study_dir} has no {results.TRIALS_FILE}: the study is running, or it stopped "
            "before writing its tables. Let it finish (or finish it with --resume), then prune."
        )
    import pandas as pd

    trials = pd.read_csv(table, dtype={"trial_id": str})
    ended = results.ended_statuses(study.get("scheduler") is not None)
    unfinished = int((~trials["status"].isin(ended)).sum())
    planned = _planned_trials(study)
    if unfinished or len(trials) < planned:
        raise PruneError(
            f"{study_dir} is unfinished ({len(trials) - unfinished} of {planned} trials ended): "
            "its checkpoints are what --resume continues from, so it is left as it is. Finish it "
            "with the study's command and --resume; the run then keeps what its policy keeps."
        )


def prune(study_dir: Path, policy: str) -> list[Path]:
    """Prune a finished study (each part of a study made of studies); return the folders
    pruned.

    Raises:
        PruneError: No study there, or a study (or part) that is unfinished or running.
    """
    from gapan.tune.checkpoints import gather_models, settle_study

    study_file = study_dir / results.STUDY_FILE
    try:
        study = json.loads(study_file.read_text())
    except FileNotFoundError:
        raise PruneError(f"{study_dir} holds no study ({results.STUDY_FILE} is missing)") from None
    except (OSError, ValueError) as error:
        raise PruneError(f"{study_file} cannot be read ({error})") from None
    parts = sorted(path.parent for path in study_dir.glob(f"*/{results.STUDY_FILE}"))
    if not (study_dir / results.TUNE_DIR).is_dir() and parts:
        sequential = study_dir / results.SEQUENTIAL_FILE
        if study.get("kind") == "tuned" and not (study_dir / "confirm").is_dir():
            raise PruneError(
                f"{study_dir} is a tuned comparison whose confirmation has not run: it is "
                "unfinished or running. Finish it with --resume first."
            )
        if "sequential" in study and (
            not sequential.is_file() or json.loads(sequential.read_text())["stopped"] == "running"
        ):
            raise PruneError(
                f"{study_dir} is an adaptive study that has not stopped: it is unfinished or "
                "running. Finish it with --resume first."
            )
        for part in parts:  # check them all before touching any
            _check_finished(part, json.loads((part / results.STUDY_FILE).read_text()))
        for part in parts:
            prune(part, policy)
        if "sequential" in study:
            gather_models(study_dir, parts, study["mode"], policy)
        _record_policy(study_dir, study, policy)
        return [*parts, study_dir]
    _check_finished(study_dir, study)
    import pandas as pd

    trials = pd.read_csv(
        study_dir / results.TRIALS_FILE,
        dtype={"trial_id": str, "setting": str},
        keep_default_na=False,
    )
    settle_study(
        study_dir,
        list(zip(trials["trial_id"], trials["status"], trials["setting"], strict=True)),
        study["metric"],
        study["mode"],
        policy,
        finished=True,
    )
    _record_policy(study_dir, study, policy)
    return [study_dir]


def _record_policy(study_dir: Path, study: dict, policy: str) -> None:
    from gapan.files import write_atomic

    study = {**study, "keep_checkpoints": policy}
    write_atomic(study_dir / results.STUDY_FILE, json.dumps(study, indent=2, default=str) + "\n")


def _check_not_running(study_dir: Path) -> None:
    """Refuse a part of a study (a round, a search, a split) whose whole study is running."""
    for folder in study_dir.resolve().parents:
        if not (folder / results.STUDY_FILE).is_file():
            return
        driver = running_driver(folder)
        if driver is not None:
            raise StudyLocked(f"{study_dir} is a part of {folder}, run by {describe(driver)}")


def _size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gapan.tune.prune",
        description="Keep only what a checkpoint policy keeps of a finished study's folder.",
    )
    parser.add_argument("study", type=Path, help="the study's results folder")
    parser.add_argument(
        "--keep-checkpoints",
        choices=results.KEEP_POLICIES,
        default="best",
        help="best (default): the final weights of the best trial of each setting (of a "
        "search: the best trial); last: of every completed trial; none",
    )
    args = parser.parse_args(argv)
    before = _size(args.study) if args.study.is_dir() else 0
    try:
        if not args.study.is_dir():
            raise PruneError(f"{args.study} holds no study (it is not a folder)")
        _check_not_running(args.study)
        # A driver that holds the folder (a running study) keeps it as it is.
        with study_lock(args.study):
            pruned = prune(args.study, args.keep_checkpoints)
    except StudyLocked as error:
        print(f"error: {error}; prune it once the study has ended", file=sys.stderr)
        return 2
    except (PruneError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (KeyError, ValueError, TypeError) as error:
        # A damaged or hand-edited study.json, trials.csv or sequential.json.
        print(
            f"error: {args.study} holds a study file that cannot be read ({type(error).__name__}: "
            f"{error}); restore it, or rebuild the report to see which one",
            file=sys.stderr,
        )
        return 2
    after = _size(args.study)
    kept = sorted(p.name for folder in pruned for p in (folder / results.MODELS_DIR).glob("*"))
    print(
        f"{args.study}: {before / 1e6:.1f} MB before, {after / 1e6:.1f} MB after; weights kept "
        f"of {len(kept)} trial(s){': ' + ', '.join(kept) if kept else ''}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
