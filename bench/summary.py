"""The key figures of a file of bench JSON lines, one short table per bench (no torch needed).

python -m bench.summary gpu_check.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    cells = [["-" if row.get(c) is None else str(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(line[i]) for line in cells)]) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
    for line in cells:
        print("  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)))


def summarize(lines: list[dict[str, Any]]) -> None:
    for result in lines:
        bench = result.get("bench")
        machine = result.get("environment", {})
        where = machine.get("gpu") or machine.get("device", "")
        if result.get("status") == "skipped":
            print(f"\n{bench} ({result.get('args', '')}): SKIPPED, the time budget was spent")
        elif result.get("status") == "failed":
            print(
                f"\n{bench} ({result.get('args', '')}): FAILED, exit {result.get('rc')} after "
                f"{result.get('seconds')} s (timeout: 124)"
            )
        elif bench == "step":
            mode = "compiled" if result["compiled"] else "eager"
            _table(
                f"step: batch {result['batch']}, {result['image_size']} px, {mode}, {where}",
                result["rows"],
                ["backbone", "step", "depth", "ms", "img_per_s", "ratio", "peak_gib"],
            )
            if result.get("breakdown"):
                _table(
                    "step: parts of the loss",
                    result["breakdown"],
                    ["backbone", "depth", "part", "device_ms", "host_ms"],
                )
            for key, found in result.get("sync_points", {}).items():
                listed = "; ".join(f"{count}x {place}" for place, count in found.items())
                print(f"\nsyncs in two steps of {key}: {listed or 'none'}")
        elif bench == "input_pipeline":
            _table(
                f"input pipeline: {result['backbone']}, batch {result['batch']}, "
                f"{result['image_size']} px, {where}",
                result["rows"],
                [
                    "input",
                    "workers",
                    "steps",
                    "img_per_s",
                    "ratio",
                    "decode_only_img_per_s",
                    "setup_s",
                ],
            )
        elif bench == "loss_ops":
            _table(
                f"loss operations ({result['counted']}), batch {result['batch']}, {where}",
                result["rows"],
                ["depth", "flow", "operations", "generated_kernels", "ratio", "ms", "ms_ratio"],
            )
        elif bench == "evaluation":
            _table(
                f"evaluation, {where}",
                result["rows"],
                ["count", "classes", "seconds", "seconds_max", "map_at_r"],
            )
        elif bench == "packing":
            _table(f"packing, {where}", [result["summary"]], list(result["summary"]))
        elif bench == "frozen_trial":
            for part in ("cache", "trial", "study"):
                if result.get(part):
                    shown = {k: v for k, v in result[part].items() if not isinstance(v, list)}
                    _table(f"frozen mode: {part}", [shown], list(shown))
        else:
            print(json.dumps(result)[:500])


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if len(arguments) != 1:
        print("usage: python -m bench.summary FILE.jsonl", file=sys.stderr)
        return 2
    path = Path(arguments[0])
    if not path.is_file():
        print(f"{path}: no such file (no bench has written results yet)", file=sys.stderr)
        return 1
    lines = []
    for number, text in enumerate(path.read_text().splitlines(), 1):
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            print(f"{path}:{number}: not a JSON line, skipped", file=sys.stderr)
    summarize(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
