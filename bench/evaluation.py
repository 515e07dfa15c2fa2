"""Time exact retrieval metrics: `gapan.metrics.retrieval_metrics` (no NMI) on N x 512 embeddings.

The embeddings are random points around random class centres, leave-one-out as for SOP and CUB.
Two class layouts by default: SOP-like (about 5 images per class, so R is small) and CUB-like
(about 60 per class, so MAP@R needs a deeper neighbour list). Each is timed after a warm-up call;
the figure is the median of the timed calls, data already on the device.

    python -m bench.evaluation                        # GPU: 60,000 embeddings
    python -m bench.evaluation --device cpu --count 20000
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch

from bench.common import (
    bench_parser,
    emit,
    environment,
    fill_device_defaults,
    print_table,
    rounded,
    time_device,
)
from gapan.metrics import retrieval_metrics


def clustered_embeddings(
    count: int, classes: int, dim: int, spread: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` points in `classes` clusters of about equal size; `spread`: noise per dimension."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(count) % classes
    centres = torch.randn(classes, dim, generator=generator)
    points = centres[labels] + spread * torch.randn(count, dim, generator=generator)
    return points.to(device), labels.to(device)


def time_metrics(
    query: torch.Tensor, labels: torch.Tensor, repeats: int, device: torch.device
) -> tuple[dict[str, float], list[float]]:
    """The metrics, and the seconds of each of `repeats` calls after a warm-up call."""

    def evaluate() -> dict[str, float]:
        return retrieval_metrics(query, labels, with_nmi=False)

    metrics = evaluate()  # warm-up: kernels, allocator, cuBLAS handles
    return metrics, [time_device(device, evaluate)[0] for _ in range(repeats)]


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = bench_parser("evaluation", __doc__)
    parser.add_argument(
        "--count", type=int, help="embeddings (default 60,000 on CUDA, 20,000 on the CPU)"
    )
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument(
        "--per-class",
        default="5,60",
        help="images per class of each layout (default 5,60: SOP-like, CUB-like)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up")
    return fill_device_defaults(parser.parse_args(argv), count=(60_000, 20_000))


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    device = torch.device(args.device)
    rows: list[dict[str, Any]] = []
    for per_class in [int(value) for value in args.per_class.split(",")]:
        classes = max(2, args.count // per_class)
        # At 2.5 per dimension the classes overlap enough that MAP@R is far from 0 and from 1,
        # so the neighbour lists are as mixed as a real model's.
        query, labels = clustered_embeddings(args.count, classes, args.dim, 2.5, device)
        metrics, seconds = time_metrics(query, labels, args.repeats, device)
        rows.append(
            {
                "count": args.count,
                "dim": args.dim,
                "classes": classes,
                "per_class": per_class,
                "seconds": rounded(statistics.median(seconds)),
                "seconds_max": rounded(max(seconds)),
                "recall_at_1": rounded(metrics["recall_at_1"]),
                "map_at_r": rounded(metrics["map_at_r"]),
            }
        )
        print(
            f"  {args.count} x {args.dim}, {classes} classes: {rows[-1]['seconds']} s", flush=True
        )
        del query, labels
    print_table(
        f"exact retrieval metrics (leave-one-out, no NMI), {device.type}",
        rows,
        [
            "count",
            "dim",
            "classes",
            "per_class",
            "seconds",
            "seconds_max",
            "recall_at_1",
            "map_at_r",
        ],
    )
    emit({"bench": "evaluation", "environment": environment(device), "rows": rows}, args.json_out)


if __name__ == "__main__":
    main()
