"""`run_adaptive`: an ablation or comparison whose seeds go where the answer is still open.

Round 1 runs every setting with `StudyOptions.min_seeds` seeds. After each round every setting's
comparison with the baseline (paired by seed) is looked at (`gapan.sequential.look`); each
later round runs one more seed of the baseline and of every setting still undecided. The study
stops when every comparison is decided, at `max_seeds`, or when `budget_minutes` have passed.

Each round is a study of its own in the study's folder (``round_<k>/``), so a killed study
resumes inside the round it was in and never runs a finished seed again; the rounds' tables are
merged into the study's own after every round, so the folder reads like any ablation's, with
``sequential.json`` saying how each answer was reached.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from gapan import results
from gapan.files import write_atomic
from gapan.sequential import METHOD, UNDECIDED, Design, look, paired_differences, undecided
from gapan.space import StudySpace
from gapan.tune.checkpoints import gather_models
from gapan.tune.options import StudyError, StudyOptions, apply_options
from gapan.tune.parts import check_whole_study, run_part

ROUND_PREFIX = "round_"


def adaptive_design(space: StudySpace, options: StudyOptions) -> Design:
    """The group-sequential design `options` ask for on `space`, or a StudyError saying why
    adaptive seeds cannot run it."""
    if space.kind not in ("ablation", "compare"):
        raise StudyError("--seeds auto is for ablations and comparisons")
    if space.contrasts:
        raise StudyError(
            f"{space.name} compares CONTRASTS beside its baseline, and --seeds auto chooses "
            "seeds for the baseline's comparisons only; give a number of seeds"
        )
    # A smoke run still takes more than one round.
    least, most = (2, 3) if options.smoke else (options.min_seeds, options.max_seeds)
    applied = apply_options(space, options)
    try:
        return Design(
            min_seeds=least,
            max_seeds=most,
            comparisons=len(applied.search[applied.knob]["values"]) - 1,
            precision=options.precision,
        )
    except ValueError as error:
        raise StudyError(f"--min-seeds/--max-seeds: {error}") from None


def run_adaptive(space: StudySpace, options: StudyOptions) -> Path:
    """Run (or resume) an adaptive study to its end and write its folder; return the folder."""
    design = adaptive_design(space, options)
    # study.json's seeds: the most any setting may get (each round says what it ran).
    space = dataclasses.replace(apply_options(space, options), seeds=design.max_seeds)
    study_dir = options.study_dir
    _write_study(study_dir, space, design, options)
    started = time.monotonic()
    rounds: list[dict[str, Any]] = []
    settings = list(space.search[space.knob]["values"])
    seeds_done, stop = 0, ""
    while not stop:
        number, seeds = len(rounds) + 1, design.min_seeds if not rounds else 1
        part = round_space(space, number, settings, seeds_done, seeds)
        trials = _run_round(study_dir, space, options, number, part)
        seeds_done += seeds
        differences = setting_differences(trials, space)
        looks = {setting: look(values, design) for setting, values in differences.items()}
        rounds.append(
            {
                "round": number,
                "seeds": list(range(seeds_done - seeds, seeds_done)),
                "settings": [results.setting_text(setting) for setting in settings],
                "looks": {setting: dataclasses.asdict(seen) for setting, seen in looks.items()},
            }
        )
        # Seeds, not pairs, bound the rounds: a setting whose trials fail has fewer pairs.
        more = undecided(differences, design) if seeds_done < design.max_seeds else []
        stop = _stop(more, looks, design, options.budget_minutes, time.monotonic() - started)
        # The next round's settings: the baseline's and the undecided ones' values, read back.
        values = results.setting_values(trials)
        settings = [space.baseline, *[values[name] for name in more]]
        write_sequential(study_dir, design, rounds, stop)
    return study_dir


def _write_study(study_dir: Path, space: StudySpace, design: Design, options: StudyOptions) -> None:
    """study.json of a new study, or of a resumed one started with the same design."""
    check_whole_study(study_dir, space, options.resume)
    saved = results.read_study(study_dir).get("sequential") if options.resume else None
    if options.resume and saved != dataclasses.asdict(design):
        raise StudyError(
            f"{study_dir} was started with another adaptive design ({saved}); resume with its "
            "--min-seeds, --max-seeds and --precision, or give a new --name"
        )
    extra = {"folder": str(study_dir), "sequential": dataclasses.asdict(design)}
    results.write_study(study_dir, space, {**extra, **options.reporting})


def _run_round(
    study_dir: Path, space: StudySpace, options: StudyOptions, number: int, part: StudySpace
) -> pd.DataFrame:
    """Run round `number`, `part` (a resume keeps it if it finished), merge every round so far
    into the study's tables and keep the best weights over them; return the study's trials."""
    run_part(part, options, study_dir)
    trials = merge_rounds(study_dir, space, number)
    # Each round kept the best of its own seeds; the study keeps the best over all rounds.
    folders = [study_dir / f"{ROUND_PREFIX}{k}" for k in range(1, number + 1)]
    gather_models(study_dir, folders, space.mode, options.keep_checkpoints)
    return trials


def _stop(
    more: list[str],
    looks: dict[str, Any],
    design: Design,
    budget_minutes: float | None,
    elapsed_s: float,
) -> str:
    """Why the study stops after this round, in words; "" while it goes on."""
    if not more:
        open_ones = [setting for setting, seen in looks.items() if seen.decision == UNDECIDED]
        if open_ones:
            return (
                f"{design.max_seeds} seeds, the most allowed, with "
                f"{len(open_ones)} comparison(s) still undecided"
            )
        return "no comparison is open: each interval excludes zero or is precise enough"
    if budget_minutes is not None and elapsed_s > budget_minutes * 60:
        return f"the time budget of {budget_minutes:g} minutes ran out"
    return ""


def round_space(
    space: StudySpace, number: int, settings: list[Any], first_seed: int, seeds: int
) -> StudySpace:
    """Round `number`: `settings` (the baseline among them) with seeds `first_seed` onwards."""
    knob = space.knob
    return dataclasses.replace(
        space,
        name=f"{ROUND_PREFIX}{number}",
        search={knob: {**space.search[knob], "values": list(settings)}},
        seeds=seeds,
        first_seed=first_seed,
    )


def setting_differences(trials: pd.DataFrame, space: StudySpace) -> dict[str, list[float]]:
    """Each setting's differences from the baseline (setting minus baseline) in seed order, over
    the seeds where both completed with a finite metric (a failed trial leaves its pair out);
    keyed by the settings' text, as trials.csv and sequential.json name them."""
    usable = trials[(trials["status"] == "completed") & trials[space.metric].notna()]
    values = usable.rename(columns={space.metric: "value"})[[results.SETTING, "seed", "value"]]
    baseline = results.setting_text(space.baseline)
    names = [results.setting_text(value) for value in space.search[space.knob]["values"]]
    return {
        name: paired_differences(values, name, baseline)["difference"].tolist()
        for name in names
        if name != baseline
    }


def merge_rounds(study_dir: Path, space: StudySpace, count: int) -> pd.DataFrame:
    """Write the study's own tables from its first `count` rounds; return the trials table."""
    folders = [study_dir / f"{ROUND_PREFIX}{number}" for number in range(1, count + 1)]
    trials = pd.concat(
        [
            # Settings stay text as written: "None" or "NA" is a setting, not a missing value.
            pd.read_csv(
                folder / results.TRIALS_FILE,
                dtype={"trial_id": str, results.SETTING: str, results.SETTING_VALUE: str},
                keep_default_na=False,
                na_values=[""],
            ).assign(round=number)
            for number, folder in enumerate(folders, start=1)
        ],
        ignore_index=True,
    )
    trials["number"] = range(1, len(trials) + 1)
    epochs = pd.concat(
        [
            pd.read_csv(folder / results.EPOCHS_FILE, dtype={"trial_id": str})
            for folder in folders
            if (folder / results.EPOCHS_FILE).exists()
        ],
        ignore_index=True,
    )
    classes = [
        pd.read_csv(
            folder / results.CLASS_SCORES_FILE,
            dtype={"trial_id": str, "class": str},
            keep_default_na=False,
            na_values=[""],
        )
        for folder in folders
        if (folder / results.CLASS_SCORES_FILE).exists()
    ]
    write_atomic(study_dir / results.TRIALS_FILE, results.csv_text(trials))
    write_atomic(study_dir / results.EPOCHS_FILE, results.csv_text(epochs))
    if classes:
        write_atomic(
            study_dir / results.CLASS_SCORES_FILE,
            results.csv_text(pd.concat(classes, ignore_index=True)),
        )
    for folder in folders:
        for trial in (folder / results.TRIALS_DIR).iterdir():
            target = study_dir / results.TRIALS_DIR / trial.name
            if not target.exists():
                shutil.copytree(trial, target)
    first = folders[0]
    if (first / results.REFERENCE_FILE).exists():
        shutil.copyfile(first / results.REFERENCE_FILE, study_dir / results.REFERENCE_FILE)
    environment = _environment(first)
    walls = [_environment(folder).get("study_wall_s", math.nan) for folder in folders]
    environment.update(
        study_wall_s=float(sum(walls)),
        trials=len(trials),
        rounds=count,
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    results.write_environment(study_dir, environment)
    return trials


def _environment(folder: Path) -> dict[str, Any]:
    """A round's environment.json; {} when its driver was killed before writing it (the round's
    tables were written first, so the round itself is whole)."""
    try:
        return json.loads((folder / results.ENVIRONMENT_FILE).read_text())
    except FileNotFoundError:
        return {}


def write_sequential(
    study_dir: Path, design: Design, rounds: list[dict[str, Any]], stop: str
) -> None:
    """sequential.json: the design, every round's looks, and why the study stopped."""
    decided: dict[str, dict[str, Any]] = {}
    for record in rounds:
        for setting, seen in record["looks"].items():
            if setting not in decided or decided[setting]["decision"] == UNDECIDED:
                decided[setting] = {**seen, "round": record["round"]}
    record = {
        "method": METHOD,
        "design": dataclasses.asdict(design),
        "rounds": rounds,
        "settings": decided,
        "stopped": stop or "running",
    }
    write_atomic(
        study_dir / results.SEQUENTIAL_FILE, json.dumps(record, indent=2, default=str) + "\n"
    )
