"""Time one training step: the bare backbone against GAPan's step, by flow depth and backbone.

The bare step is the backbone, its global pool and the 512-d linear head (`EmbeddingModel`) with a
trivial loss, the mean squared embedding, and AdamW. The GAPan step is the trainer's own
`gapan.train.train_epoch` with the trainer's model, `GapanCriterion` and optimizer, built from an
`ExperimentConfig` as `gapan.train.train` builds them (finetune mode, 16 anchors per class, 32
classes x 4 images per batch by default). On CUDA it is timed twice: with the loss as one CUDA
graph, as the trainer runs it (``train.cuda_graphs=true``, step `gapan`), and eagerly, kernel by
kernel (``train.cuda_graphs=false``, step `gapan-eager`); with --compile also with the loss
compiled by torch.compile inside the graph (step `gapan-fused`, a candidate for the trainer).
All share one model per backbone (one compiled module with --compile, as ``train.compile``
compiles the model), the same random images already on the device, batch and image size; on
CUDA in bfloat16 autocast with channels-last memory, as the trainer runs. The ratio is GAPan's
step time over the bare step's, measured in the same run.

    python -m bench.step                          # GPU: resnet50, batch 128, 224 px, depths 0-16
    python -m bench.step --compile --breakdown
    python -m bench.step --device cpu --batch 32 --image-size 64 --depths 0,8 --steps 3

--breakdown times the parts of GAPan's loss on their own, eagerly (flow NLL, anchors through the
inverse flow, alignment, gradient clipping), device time beside host time, and on CUDA lists
where the step makes the host wait for the device.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import statistics
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.common import (
    bench_parser,
    emit,
    environment,
    fill_device_defaults,
    print_table,
    rounded,
    time_device,
)
from gapan import cuda_graphs
from gapan.backbone import build_backbone
from gapan.config import ExperimentConfig, from_flat
from gapan.losses import GapanCriterion, alignment_loss
from gapan.model import EmbeddingModel
from gapan.train import build_optimizer, seed_everything, train_epoch

SEEN_CLASSES = 100  # class priors in the flow (CUB's training classes)


class CompiledAfterFirstCall(nn.Module):
    """`criterion` compiled by torch.compile from its second call on: step `gapan-fused`.

    Inside `GraphedCriterion` the first call is the no-gradient pass in which ActNorm
    initialises itself from the data, which stays eager; the warm-up passes that follow compile
    the loss before the capture, so the graph replays the compiled (fewer, fused) kernels. A
    candidate for the trainer, measured here. Training steps only: its mode is its own, not the
    criterion's.
    """

    def __init__(self, criterion: nn.Module):
        super().__init__()
        self.criterion = criterion
        self.compiled: Callable[..., dict[str, torch.Tensor]] | None = None

    def forward(self, embeddings, labels, classes) -> dict[str, torch.Tensor]:
        if self.compiled is None:
            # The bound method, not the module: a compiled module would register as a second
            # parent of the criterion's parameters.
            self.compiled = torch.compile(self.criterion.forward, dynamic=False)
            return self.criterion(embeddings, labels, classes)
        return self.compiled(embeddings, labels, classes)


def fused_loss_function(criterion: nn.Module) -> cuda_graphs.GraphedCriterion:
    """GAPan's loss compiled by torch.compile and captured as one CUDA graph (`gapan-fused`)."""
    return cuda_graphs.GraphedCriterion(CompiledAfterFirstCall(criterion))


class SquaredEmbedding(nn.Module):
    """The bare step's loss: the mean squared embedding (the backward pass reaches every weight)."""

    def forward(self, embeddings, labels, classes=None) -> dict[str, torch.Tensor]:
        return {"loss": embeddings.float().pow(2).mean()}

    def flow_parameters(self) -> list[nn.Parameter]:
        return []

    def metric_parameters(self) -> list[nn.Parameter]:
        return []


def experiment_config(
    backbone: str,
    depth: int,
    batch: int,
    samples_per_class: int,
    image_size: int,
    anchors: int,
    device: torch.device,
    compile_model: bool,
    graphs: bool = True,
) -> ExperimentConfig:
    """The trainer's config for this bench: finetune mode, random weights (nothing to download)."""
    if batch % samples_per_class:
        raise SystemExit(
            f"--batch {batch} is not a multiple of --samples-per-class {samples_per_class}"
        )
    return from_flat(
        {
            "model.backbone": backbone,
            "model.pretrained": "none",
            "model.backbone_mode": "finetune",
            "flow.depth": depth,
            "anchors.count": anchors,
            "data.classes_per_batch": batch // samples_per_class,
            "data.samples_per_class": samples_per_class,
            "data.image_size": image_size,
            "train.device": device.type,
            "train.compile": compile_model,
            "train.cuda_graphs": graphs,
        }
    )


def build_model(
    cfg: ExperimentConfig, device: torch.device
) -> tuple[EmbeddingModel, Callable[[torch.Tensor], torch.Tensor]]:
    """The model as `gapan.train.train` builds it, and what the step calls (compiled or not)."""
    seed_everything(cfg.train.seed)
    backbone = build_backbone(cfg.model)
    model = EmbeddingModel(backbone, backbone.num_features, cfg.model.embed_dim).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if cfg.train.compile else model
    return model, forward


def random_batch(
    cfg: ExperimentConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images in [0, 1], labels as the m-per-class sampler makes them and their sorted classes,
    on the device: a training batch as `gapan.train` yields it."""
    generator = torch.Generator().manual_seed(0)
    batch = cfg.data.classes_per_batch * cfg.data.samples_per_class
    size = cfg.data.image_size
    images = torch.rand(batch, 3, size, size, generator=generator)
    classes = torch.randperm(SEEN_CLASSES, generator=generator)[: cfg.data.classes_per_batch]
    labels = classes.repeat_interleave(cfg.data.samples_per_class)
    return images.to(device), labels.to(device), classes.sort().values.to(device)


def make_criterion(kind: str, cfg: ExperimentConfig, device: torch.device) -> nn.Module:
    if kind == "bare":
        return SquaredEmbedding().to(device)
    if kind in ("gapan", "gapan-eager", "gapan-fused"):
        return GapanCriterion(cfg, SEEN_CLASSES, cfg.model.embed_dim).to(device)
    raise ValueError(f"unknown step {kind!r}")


def step_config(kind: str, cfg: ExperimentConfig) -> ExperimentConfig:
    if kind == "bare":  # forward, backward and AdamW only: no gradient clipping
        return from_flat({"optim.grad_clip": 0.0, "train.cuda_graphs": False}, cfg)
    return from_flat({"train.cuda_graphs": kind != "gapan-eager"}, cfg)


def step_kinds(device: torch.device, compiled: bool) -> list[str]:
    """GAPan's steps to time: as the trainer runs it, and on CUDA without the CUDA graph and,
    with --compile, with the loss compiled inside the graph (a candidate, not the trainer's)."""
    if device.type != "cuda":
        return ["gapan"]
    return ["gapan-eager", "gapan", "gapan-fused"] if compiled else ["gapan-eager", "gapan"]


def step_runner(
    kind: str,
    cfg: ExperimentConfig,
    model: EmbeddingModel,
    forward: Callable[[torch.Tensor], torch.Tensor],
    batch: tuple[torch.Tensor, ...],
    device: torch.device,
) -> Callable[[int], None]:
    """A function running `count` training steps of `kind` as `gapan.train.train` runs them."""
    cfg = step_config(kind, cfg)
    criterion = make_criterion(kind, cfg, device)
    optimizer = build_optimizer(cfg, model, criterion)
    if kind == "gapan-fused":
        loss_function = fused_loss_function(criterion)
    else:
        loss_function = cuda_graphs.loss_function(criterion, device, cfg.train.cuda_graphs)

    def run(count: int) -> None:
        batches = itertools.repeat(batch, count)
        train_epoch(forward, criterion, optimizer, batches, cfg, device, loss_function)

    return run


def time_steps(
    run: Callable[[int], None], device: torch.device, warmup: int, steps: int
) -> dict[str, Any]:
    """Milliseconds per step of a `step_runner`, after `warmup` steps; peak GPU memory on CUDA.

    On CUDA the mean over `steps` consecutive steps (CUDA events); on the CPU the median of
    `steps` steps timed one by one. The warm-up includes the CUDA graph's capture.
    """
    run(max(warmup, 1))  # the first step captures the CUDA graph
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        milliseconds = 1000 * time_device(device, lambda: run(steps))[0] / steps
    else:
        # CPUs shared with other work stall for seconds at random: the median step resists that.
        milliseconds = 1000 * statistics.median(
            time_device(device, lambda: run(1))[0] for _ in range(steps)
        )
    row = {"ms": rounded(milliseconds)}
    if device.type == "cuda":
        row["peak_gib"] = rounded(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return row


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------- breakdown


def breakdown(
    cfg: ExperimentConfig,
    model: EmbeddingModel,
    device: torch.device,
    repeats: int,
) -> list[dict[str, Any]]:
    """Device and host milliseconds of each part of GAPan's loss on a batch of embeddings, run
    eagerly: host time equal to device time means the device waits for the host's launches."""
    criterion = make_criterion("gapan", cfg, device)
    batch = cfg.data.classes_per_batch * cfg.data.samples_per_class
    generator = torch.Generator().manual_seed(1)
    embeddings = torch.randn(batch, cfg.model.embed_dim, generator=generator).to(device)
    embeddings.requires_grad_(True)
    _, labels, classes = random_batch(cfg, device)
    flow = criterion.flow
    points = criterion.scale * F.normalize(embeddings.detach(), dim=-1)
    anchors = flow.anchors(classes, cfg.anchors.count, cfg.anchors.temperature).detach()
    parameters = list(model.parameters()) + list(criterion.parameters())
    for parameter in parameters:  # clipping reads every gradient, as after a real backward pass
        parameter.grad = torch.zeros_like(parameter)

    def criterion_step() -> None:
        criterion(embeddings, labels, classes)["loss"].backward()

    def nll_step() -> None:
        flow.nll_per_dim(points, labels).backward()

    def anchor_sampling() -> None:
        with torch.no_grad():
            flow.anchors(classes, cfg.anchors.count, cfg.anchors.temperature)

    def alignment_step() -> None:
        alignment_loss(embeddings, labels, classes, anchors, cfg.align.temperature).backward()

    def clip() -> None:
        torch.nn.utils.clip_grad_norm_(parameters, cfg.optim.grad_clip)

    parts = {
        "criterion fwd+bwd": criterion_step,
        "flow NLL fwd+bwd": nll_step,
        "anchors (inverse flow, no grad)": anchor_sampling,
        "alignment fwd+bwd": alignment_step,
        "grad clip (model + flow)": clip,
    }
    criterion.train()
    rows = []
    for name, work in parts.items():
        work()  # warm-up (and ActNorm's data-dependent initialisation)
        timings = [time_device(device, work) for _ in range(repeats)]
        rows.append(
            {
                "depth": cfg.flow.depth,
                "part": name,
                "device_ms": rounded(1000 * sum(t[0] for t in timings) / repeats),
                "host_ms": rounded(1000 * sum(t[1] for t in timings) / repeats),
            }
        )
    for parameter in parameters:
        parameter.grad = None
    release(device)
    return rows


def sync_points(run: Callable[[int], None], device: torch.device) -> dict[str, int]:
    """Where two steps of a `step_runner` make the host wait for the device: location -> count.

    A location counted twice is paid every step; once, every epoch (the loss read at its end).
    """
    run(2)  # initialisation (ActNorm, optimizer state) is not what a step costs
    found: Counter[str] = Counter()

    def note(message, category, filename, lineno, file=None, line=None) -> None:
        if "synchroniz" not in str(message):
            return
        frames = [
            frame
            for frame in traceback.extract_stack()[:-1]
            if "/torch/" not in frame.filename and not frame.filename.endswith("warnings.py")
        ]
        frame = frames[-1] if frames else None
        where = f"{_short_path(frame.filename)}:{frame.lineno} {frame.line}" if frame else filename
        found[where] += 1

    torch.cuda.synchronize(device)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = note
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run(2)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return dict(found)


def _short_path(filename: str) -> str:
    for marker in ("site-packages/", "/gapan/", "/bench/"):
        if marker in filename:
            head = marker.strip("/") + "/" if marker != "site-packages/" else ""
            return head + filename.split(marker, 1)[1]
    return Path(filename).name


# ------------------------------------------------------------------------------------ main


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = bench_parser("step", __doc__)
    parser.add_argument(
        "--backbones",
        help="comma-separated timm names (default: resnet50 on CUDA, mobilenetv2_100 on the CPU)",
    )
    parser.add_argument("--depths", default="0,2,4,8,16", help="flow depths (default 0,2,4,8,16)")
    parser.add_argument(
        "--batch", type=int, help="images per step (default 128 on CUDA, 32 on the CPU)"
    )
    parser.add_argument("--samples-per-class", type=int, default=4)
    parser.add_argument(
        "--image-size", type=int, help="pixels (default 224 on CUDA, 64 on the CPU)"
    )
    parser.add_argument("--anchors", type=int, default=16, help="anchors per class (default 16)")
    parser.add_argument("--steps", type=int, help="timed steps (default 30 on CUDA, 3 on the CPU)")
    parser.add_argument(
        "--warmup", type=int, help="untimed steps first (default 10 on CUDA, 2 on the CPU)"
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the model, as train.compile=true does"
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="time the loss's parts and find syncs"
    )
    return fill_device_defaults(
        parser.parse_args(argv),
        backbones=("resnet50", "mobilenetv2_100"),
        batch=(128, 32),
        image_size=(224, 64),
        steps=(30, 3),
        warmup=(10, 2),
    )


def bench_backbone(
    backbone: str, args: argparse.Namespace, device: torch.device
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, dict[str, int]]]:
    """Step rows, loss-part rows and sync points of one backbone at every depth."""
    depths = [int(value) for value in args.depths.split(",") if value.strip()]

    def config(depth: int) -> ExperimentConfig:
        return experiment_config(
            backbone,
            depth,
            args.batch,
            args.samples_per_class,
            args.image_size,
            args.anchors,
            device,
            args.compile,
        )

    base = config(depths[0] if depths else 0)
    model, forward = build_model(base, device)
    batch = random_batch(base, device)

    def measure(kind: str, cfg: ExperimentConfig) -> dict[str, Any]:
        run = step_runner(kind, cfg, model, forward, batch, device)
        timed = time_steps(run, device, args.warmup, args.steps)
        release(device)
        row = {
            "step": kind,
            "depth": cfg.flow.depth if kind != "bare" else None,
            **timed,
            "img_per_s": rounded(len(batch[0]) * 1000 / timed["ms"]),
            "backbone": backbone,
            "compiled": args.compile,
        }
        print(f"  {backbone} {kind} depth={row['depth']}: {row['ms']} ms/step", flush=True)
        return row

    # The bare step runs first and last; the faster is the reference (so a slow start or a
    # drift during the run never flatters GAPan's ratio), their gap shows the noise.
    bare_rows = [measure("bare", base)]
    gapan_rows = []
    parts: list[dict[str, Any]] = []
    for depth in depths:
        for kind in step_kinds(device, args.compile):
            gapan_rows.append(measure(kind, config(depth)))
        if args.breakdown and depth > 0:
            found = breakdown(config(depth), model, device, 5)
            parts += [{"backbone": backbone, **row} for row in found]
    bare_rows.append(measure("bare", base))
    bare_ms = min(row["ms"] for row in bare_rows)
    for row in bare_rows + gapan_rows:
        row["ratio"] = rounded(row["ms"] / bare_ms)

    syncs: dict[str, dict[str, int]] = {}
    if args.breakdown and device.type == "cuda":
        deepest = config(max(depths, default=0))
        for kind in ["bare", *step_kinds(device, args.compile)]:
            key = f"{backbone} {kind} depth={deepest.flow.depth}"
            run = step_runner(kind, deepest, model, forward, batch, device)
            syncs[key] = sync_points(run, device)
            release(device)
    return bare_rows + gapan_rows, parts, syncs


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    device = torch.device(args.device)
    # cuDNN picks its fastest convolution algorithms for these shapes (the bare and the GAPan
    # step alike). The trainer leaves this off; see the README.
    torch.backends.cudnn.benchmark = True
    rows: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    syncs: dict[str, dict[str, int]] = {}
    for backbone in [name.strip() for name in args.backbones.split(",") if name.strip()]:
        found = bench_backbone(backbone, args, device)
        rows += found[0]
        parts += found[1]
        syncs.update(found[2])
        release(device)

    title = (
        f"one training step, batch {args.batch}, {args.image_size} px, "
        f"{'compiled' if args.compile else 'eager'}, {device.type}"
    )
    print_table(
        title,
        rows,
        ["backbone", "step", "depth", "compiled", "ms", "img_per_s", "ratio", "peak_gib"],
    )
    if parts:
        print_table(
            "parts of GAPan's loss (batch of embeddings, no backbone)",
            parts,
            ["backbone", "depth", "part", "device_ms", "host_ms"],
        )
    for key, locations in syncs.items():
        print(f"\nhost waits for the device in two steps of {key} (location: count)")
        for where, count in sorted(locations.items(), key=lambda item: -item[1]):
            print(f"  {count:3d}  {where}")
        if not locations:
            print("  none")
    result = {
        "bench": "step",
        "environment": environment(device),
        "batch": args.batch,
        "image_size": args.image_size,
        "compiled": args.compile,
        "cudnn_benchmark": True,
        "steps": args.steps,
        "rows": rows,
        "breakdown": parts,
        "sync_points": syncs,
    }
    emit(result, args.json_out)


if __name__ == "__main__":
    main()
