"""Copy a finished study's tables, not its weights, into bench/results/ for the record.

A study folder holds its trials' weights, Tune's state and the Optuna journal beside the tables
its report is built from. This copies the tables alone, part by part and split by split (the
files of `TABLES`, wherever they are in the folder), so that the report and the verdict tables
rebuild from the committed copy: ``python -m bench.keep_tables results/<study> bench/results/<dir>``
writes ``bench/results/<dir>/<study>/``. Each study.json's ``folder`` is rewritten relative to
the repository, so that no machine's paths are committed.

Not a measurement: a bench helper, because only the record in bench/results/ needs it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from gapan import results

TABLES = (
    results.STUDY_FILE,
    results.TRIALS_FILE,
    results.EPOCHS_FILE,
    results.CLASS_SCORES_FILE,
    results.ENVIRONMENT_FILE,
    results.REFERENCE_FILE,
    results.SEQUENTIAL_FILE,
)
SKIPPED = (results.TRIALS_DIR, results.TUNE_DIR, results.MODELS_DIR)


def keep_tables(study_dir: Path, target_dir: Path) -> list[Path]:
    """Copy every table of `study_dir` into `target_dir`/<study name>/; return the copies."""
    kept = []
    destination = target_dir / study_dir.name
    for path in sorted(study_dir.rglob("*")):
        relative = path.relative_to(study_dir)
        if path.name not in TABLES or set(relative.parts) & set(SKIPPED):
            continue
        copy = destination / relative
        copy.parent.mkdir(parents=True, exist_ok=True)
        if path.name == results.STUDY_FILE:
            study = json.loads(path.read_text())
            study["folder"] = str(Path("results") / study_dir.name / relative.parent)
            copy.write_text(json.dumps(study, indent=2) + "\n")
        else:
            shutil.copyfile(path, copy)
        kept.append(copy)
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.keep_tables", description=__doc__)
    parser.add_argument("study_dir", type=Path, help="a finished study's results folder")
    parser.add_argument("target_dir", type=Path, help="e.g. bench/results/studies-cpu-<date>")
    args = parser.parse_args(argv)
    if not (args.study_dir / results.STUDY_FILE).is_file():
        print(f"error: {args.study_dir} holds no {results.STUDY_FILE}: not a study folder")
        return 2
    kept = keep_tables(args.study_dir, args.target_dir)
    size = sum(path.stat().st_size for path in kept)
    print(f"{len(kept)} tables ({size / 1e6:.1f} MB) in {args.target_dir / args.study_dir.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
