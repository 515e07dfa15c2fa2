"""`python -m gapan.train`: one training run from the command line, with key=value overrides."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from gapan.config import (
    ConfigError,
    ExperimentConfig,
    config_fields,
    from_flat,
    parse_overrides,
    to_flat,
)
from gapan.data import DataError
from gapan.files import write_atomic
from gapan.train import print_report, train


def _help_text() -> str:
    defaults = to_flat(ExperimentConfig())
    lines = [f"  {key} = {defaults[key]!r}" for key in config_fields()]
    return "config keys (key=value) and their defaults:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gapan.train",
        description="Train GAPan on one config; key=value arguments override the defaults.",
        epilog=_help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.add_argument(
        "--run-dir",
        type=Path,
        help="folder for the config and checkpoint (default: runs/<time>); an existing run resumes",
    )
    args = parser.parse_args(argv)
    try:
        cfg = from_flat(parse_overrides(args.overrides))
    except ConfigError as error:
        parser.error(str(error))
    run_dir = args.run_dir or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    print(f"run folder: {run_dir}", flush=True)
    try:
        metrics = train(cfg, print_report, run_dir)
    except (ConfigError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return 0 if metrics.get("status") == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
