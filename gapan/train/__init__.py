"""The trainer: `train(cfg, report)` runs one experiment and returns its final metrics.

It runs alone (``python -m gapan.train flow.depth=8 ...``, gapan/train/__main__.py), in tests and in
notebooks, and inside Ray Tune through a thin wrapper (gapan/tune/trainable.py). Its inputs come
from gapan/inputs.py. Each epoch it trains, evaluates retrieval on the
validation classes, saves a checkpoint (when given a run folder) and calls ``report`` with a flat
dict. Test metrics on the unseen classes are computed once, after the last epoch, so nothing is
ever tuned on them.
"""

from __future__ import annotations

import json
import math
import pickle
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from gapan import cuda_graphs
from gapan.config import (
    BACKBONE_MODES,
    ConfigError,
    ExperimentConfig,
    load_config,
    save_config,
    to_flat,
)
from gapan.data import Splits, build_splits
from gapan.files import atomic_path
from gapan.inputs import Batches, Inputs, TrainBatches, resolve_device
from gapan.losses import GapanCriterion
from gapan.metrics import class_scores, mean_scores, nmi, query_scores
from gapan.model import EmbeddingModel

Report = Callable[[dict[str, Any]], None]

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
# The last report's per-class scores: JSON text of one row per evaluated split and class (text,
# because Tune flattens a nested dict into one column per value); gapan.results writes them out.
CLASS_SCORES = "class_scores"
PER_CLASS_SCORES = ("map_at_r", "recall_at_1", "r_precision")
CLASS_SCORE_FIELDS = ("split", "class", "queries", *PER_CLASS_SCORES)


def print_report(metrics: dict[str, Any]) -> None:
    # Significant digits, not decimals: a learning rate near its floor is far below 1e-4.
    shown = {
        k: float(f"{v:.4g}") if isinstance(v, float) else v
        for k, v in metrics.items()
        if k != CLASS_SCORES
    }
    print(json.dumps(shown), flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_optimizer(
    cfg: ExperimentConfig, model: EmbeddingModel, criterion: GapanCriterion
) -> torch.optim.Optimizer:
    groups = [
        {"params": list(model.head.parameters()) + criterion.flow_parameters(), "lr": cfg.optim.lr}
    ]
    if model.backbone is not None:
        groups.append({"params": list(model.backbone.parameters()), "lr": cfg.optim.backbone_lr})
    if criterion.metric_parameters():
        groups.append(
            {
                "params": criterion.metric_parameters(),
                "lr": cfg.optim.lr * cfg.optim.proxy_lr_scale,
            }
        )
    # Fused: one kernel updates every tensor. The flow has dozens of small tensors, which the
    # per-tensor loop would update one by one, each with its own launches.
    return torch.optim.AdamW(groups, weight_decay=cfg.optim.weight_decay, fused=True)


def lr_factor(step: int, total_steps: int, warmup_fraction: float, min_lr_ratio: float) -> float:
    """The learning rate of optimizer step `step` (counted from 0), as a share of the base rate.

    A linear warm-up over the first ``W = round(warmup_fraction * total_steps)`` steps climbs
    from ``1 / (W + 1)`` to 1 at step ``W``; a cosine then decays from 1 to `min_lr_ratio` at the
    last step, ``total_steps - 1``. Steps past the budget stay at the floor. No step runs at a
    rate of zero, so none is wasted.

    Examples:
        >>> [round(lr_factor(step, 10, 0.2, 0.1), 3) for step in range(10)]
        [0.333, 0.667, 1.0, 0.955, 0.831, 0.65, 0.45, 0.269, 0.145, 0.1]
        >>> lr_factor(0, 10, 0.0, 0.1), lr_factor(10, 10, 0.0, 0.1)
        (1.0, 0.1)

    References:
        Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017
        (warm-up); Loshchilov and Hutter, "SGDR: Stochastic Gradient Descent with Warm
        Restarts", ICLR 2017 (cosine decay).
    """
    warmup = max(0, min(round(warmup_fraction * total_steps), total_steps - 1))
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total_steps - 1 - warmup))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    cfg: ExperimentConfig, optimizer: torch.optim.Optimizer, total_steps: int, steps_done: int = 0
) -> LambdaLR:
    """`optim.schedule` over `total_steps` optimizer steps, placed after `steps_done` of them.

    Step it once after every optimizer step. Every parameter group follows the same factor of its
    own base rate (its ``initial_lr``).
    """
    if cfg.optim.schedule == "constant":

        def factor(step: int) -> float:
            return 1.0
    else:

        def factor(step: int) -> float:
            return lr_factor(step, total_steps, cfg.optim.warmup_fraction, cfg.optim.min_lr_ratio)

    for group in optimizer.param_groups:
        # A resumed optimizer holds its groups' base rates, unless its checkpoint predates the
        # schedule: that run trained at the base rates throughout.
        group.setdefault("initial_lr", group["lr"])
    return LambdaLR(optimizer, factor, last_epoch=steps_done - 1)


def embed_split(
    model: EmbeddingModel, batches: Callable[[], Batches], device: torch.device
) -> torch.Tensor:
    model.eval()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return torch.cat([model.embed(inputs) for inputs, _ in batches()])


def evaluate(
    model: EmbeddingModel,
    inputs: Inputs,
    split: str,
    splits: Splits,
    device: torch.device,
    with_nmi: bool = True,
) -> tuple[dict[str, float], list[list[Any]]]:
    """Retrieval metrics of one split; test uses the gallery where the benchmark has one.

    Returns:
        The metrics keyed ``<split>_<metric>`` (means over queries), and one row per class of
        `CLASS_SCORE_FIELDS`: the same scores averaged over that class's queries.
    """
    query = embed_split(model, inputs.eval_batches[split], device)
    labels = inputs.eval_labels[split].to(device)
    gallery = gallery_labels = None
    if split == "test" and "gallery" in inputs.eval_batches:
        gallery = embed_split(model, inputs.eval_batches["gallery"], device)
        gallery_labels = inputs.eval_labels["gallery"].to(device)
    scores = query_scores(query, labels, gallery, gallery_labels, recall_ks=splits.recall_ks)
    metrics = mean_scores(scores)
    if with_nmi:
        metrics["nmi"] = nmi(query, labels)
    per_class = class_scores(scores, labels)
    names = getattr(splits, split).class_names
    rows = [
        [
            split,
            names[label],
            queries,
            *(per_class[key][row].item() for key in PER_CLASS_SCORES),
        ]
        for row, (label, queries) in enumerate(
            zip(per_class["label"].tolist(), per_class["queries"].tolist(), strict=True)
        )
    ]
    return {f"{split}_{name}": value for name, value in metrics.items()}, rows


def train_epoch(
    model: EmbeddingModel,
    criterion: GapanCriterion,
    optimizer: torch.optim.Optimizer,
    batches: TrainBatches,
    cfg: ExperimentConfig,
    device: torch.device,
    loss_function: Callable[..., dict[str, torch.Tensor]] | None = None,
    scheduler: LRScheduler | None = None,
) -> dict[str, float]:
    """One pass of the sampler; loss parts are summed on the device and read once at the end.

    `loss_function` computes the loss in place of `criterion` (its CUDA-graphed form);
    `scheduler` steps after every optimizer step.
    """
    model.train()
    criterion.train()
    loss_function = loss_function or criterion
    sums: dict[str, torch.Tensor] = {}
    steps = 0
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    for inputs, labels, classes in batches:
        if device.type == "cuda" and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            embeddings = model(inputs)
        losses = loss_function(embeddings, labels, classes)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(parameters, cfg.optim.grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + value.detach()
        steps += 1
    return {f"train_{name}": float(total) / max(steps, 1) for name, total in sums.items()}


def _checkpoint_state(epoch, model, criterion, optimizer, scheduler, metrics) -> dict[str, Any]:
    state = {
        "epoch": epoch,
        "model": model.state_dict(),
        "criterion": criterion.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "metrics": metrics,
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Write atomically: a run killed mid-write keeps its previous checkpoint."""
    with atomic_path(run_dir / CHECKPOINT) as temporary:
        torch.save(state, temporary)


class CheckpointError(ConfigError):
    """A run folder's checkpoint that cannot be resumed from; the message names the file and
    says what to do. Retrying does not help: the same file would be read again."""


# What every checkpoint holds for `train` to read back; ``scheduler`` is optional (a run may
# have started without one) and ``cuda_rng`` is there only on machines with a GPU.
_CHECKPOINT_KEYS = ("epoch", "model", "criterion", "optimizer", "torch_rng", "metrics")


def load_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint as tensors and plain values only (weights_only): it never runs code.

    With `mmap` the tensors are mapped from the file, not read: a reader that needs only some of
    them (the model's weights, not the optimizer's moments) reads only those.

    Raises:
        CheckpointError: The file is truncated, corrupt, not a checkpoint of this trainer, or
            holds more than tensors and plain values; the message names it and what to do.
    """
    what_to_do = (
        f"Delete {path} to restart the run from its first epoch (the rest of the run folder "
        "can stay), or put back an intact copy of it to continue where the run stopped."
    )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except PermissionError as error:
        raise CheckpointError(
            f"{path} cannot be read ({error.strerror}); give this user read access to it."
        ) from None
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):
            raise CheckpointError(
                f"{path} holds more than tensors and plain values, so it was refused unread; "
                f"this trainer never writes such a file. {what_to_do}"
            ) from None
        raise CheckpointError(_unreadable(path, error, what_to_do)) from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, IndexError) as error:
        # torch.load reports a truncated or damaged file as any of these.
        raise CheckpointError(_unreadable(path, error, what_to_do)) from None
    missing = [key for key in _CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(
            f"{path} is not a checkpoint of this trainer (it lacks {', '.join(missing)}). "
            f"{what_to_do}"
        )
    return state


def _unreadable(path: Path, error: BaseException, what_to_do: str) -> str:
    # torch's unpickling errors open with advice to load with weights_only=False, which is no
    # cure for a damaged file: keep only the unpickler's own words.
    text = str(error).rpartition("WeightsUnpickler error:")[2]
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    detail = line.split(". ")[0].rstrip(".")[:200]
    cause = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
    return (
        f"{path} is not a readable checkpoint: it is truncated or corrupt ({cause}). {what_to_do}"
    )


def _check_same_config(run_dir: Path, cfg: ExperimentConfig) -> None:
    saved = to_flat(load_config(run_dir / CONFIG))
    wanted = to_flat(cfg)
    changed = sorted(k for k in wanted if saved.get(k) != wanted[k])
    if changed:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {wanted[k]!r}" for k in changed[:5])
        raise ConfigError(
            f"{run_dir} holds a run with another config ({shown}); resume it with its own config "
            "or start the new config in another run folder"
        )


@dataclass
class _Run:
    """What one run trains and evaluates, built once by `_build_run`."""

    cfg: ExperimentConfig
    device: torch.device
    splits: Splits
    inputs: Inputs
    model: EmbeddingModel
    # The model as the training steps call it: compiled where train.compile asks.
    forward: Callable[[torch.Tensor], torch.Tensor]
    criterion: GapanCriterion
    # The criterion as the training steps call it: one CUDA graph where train.cuda_graphs asks.
    loss_function: Callable[..., dict[str, torch.Tensor]]
    optimizer: torch.optim.Optimizer


def train(
    cfg: ExperimentConfig, report: Report = print_report, run_dir: str | Path | None = None
) -> dict[str, Any]:
    """Train GAPan (or a baseline, by config) and return the last epoch's metrics.

    Args:
        cfg: the resolved experiment config.
        report: called once per epoch with a flat dict of metrics (floats, ints, and `status`).
        run_dir: where the config and checkpoint live; a run whose folder already holds a
            checkpoint continues from it, so a restarted run picks up where it stopped.
    """
    started = time.perf_counter()
    device = resolve_device(cfg.train.device)
    checkpoint = _open_run_dir(Path(run_dir), cfg) / CHECKPOINT if run_dir is not None else None
    run = _build_run(cfg, device)
    first_epoch, metrics, scheduler = _resume(run, checkpoint)
    for epoch in range(first_epoch, cfg.train.epochs + 1):
        epoch_started = time.perf_counter()
        metrics = _train_one_epoch(run, scheduler, epoch, epoch_started)
        if metrics.get("status") == "diverged":
            report(metrics)
            return metrics
        last = epoch == cfg.train.epochs
        metrics.update(_evaluation(run, last))
        metrics["time_this_epoch_s"] = time.perf_counter() - epoch_started
        metrics["elapsed_s"] = time.perf_counter() - started
        metrics["status"] = "completed" if last else "running"
        if checkpoint is not None:
            state = _checkpoint_state(
                epoch, run.model, run.criterion, run.optimizer, scheduler, metrics
            )
            save_checkpoint(checkpoint.parent, state)
        report(metrics)
    return metrics


def _open_run_dir(run_dir: Path, cfg: ExperimentConfig) -> Path:
    """The run folder, made if need be, with the config saved in it; a folder that holds a run
    already must hold this config."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / CONFIG).exists():
        _check_same_config(run_dir, cfg)
    save_config(cfg, run_dir / CONFIG)
    return run_dir


def _build_run(cfg: ExperimentConfig, device: torch.device) -> _Run:
    """The splits and inputs, then the model, criterion and optimizer, drawn from the seed."""
    seed_everything(cfg.train.seed)
    splits = build_splits(cfg.data)
    inputs = BACKBONE_MODES.get(cfg.model.backbone_mode).inputs(cfg, splits, device)
    seed_everything(cfg.train.seed)  # the same weights whether or not the features were cached
    model = EmbeddingModel(inputs.backbone, inputs.in_features, cfg.model.embed_dim).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    criterion = GapanCriterion(cfg, splits.train.num_classes, cfg.model.embed_dim).to(device)
    optimizer = build_optimizer(cfg, model, criterion)
    forward = torch.compile(model) if cfg.train.compile else model
    loss_function = cuda_graphs.loss_function(criterion, device, cfg.train.cuda_graphs)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest kernels once
    return _Run(cfg, device, splits, inputs, model, forward, criterion, loss_function, optimizer)


def _resume(run: _Run, checkpoint: Path | None) -> tuple[int, dict[str, Any], LambdaLR]:
    """The first epoch to train, the last epoch's metrics and the learning-rate schedule: where
    the checkpoint exists, the weights, optimizer and random state are restored from it."""
    first_epoch, metrics, scheduler_state = 1, {}, None
    if checkpoint is not None and checkpoint.exists():
        state = load_checkpoint(checkpoint)
        run.model.load_state_dict(state["model"])
        run.criterion.load_state_dict(state["criterion"])
        run.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        first_epoch, metrics = state["epoch"] + 1, state["metrics"]
        scheduler_state = state.get("scheduler")  # optional: see _CHECKPOINT_KEYS
    # Placed on its curve by the epochs done, which is all a checkpoint without scheduler state
    # tells; one with it restores it on top.
    steps_per_epoch = run.inputs.steps_per_epoch
    scheduler = build_scheduler(
        run.cfg,
        run.optimizer,
        run.cfg.train.epochs * steps_per_epoch,
        (first_epoch - 1) * steps_per_epoch,
    )
    if scheduler_state is not None:
        scheduler.load_state_dict(scheduler_state)
    return first_epoch, metrics, scheduler


def _train_one_epoch(
    run: _Run, scheduler: LRScheduler, epoch: int, epoch_started: float
) -> dict[str, Any]:
    """One epoch of training: its losses, learning rate and costs; with ``status=diverged`` and
    the error when a loss became non-finite."""
    device = run.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses = train_epoch(
        run.forward,
        run.criterion,
        run.optimizer,
        run.inputs.train_batches(epoch),
        run.cfg,
        device,
        run.loss_function,
        scheduler,
    )
    # What a step costs: training only (train_epoch reads its losses back at the end, so the
    # device has finished), without the evaluation.
    step_seconds = (time.perf_counter() - epoch_started) / max(run.inputs.steps_per_epoch, 1)
    # The head and flow's rate, as the epoch leaves it (the floor after the last epoch).
    metrics = {
        "epoch": epoch,
        **losses,
        "lr": run.optimizer.param_groups[0]["lr"],
        "time_per_step_s": step_seconds,
    }
    if device.type == "cuda":
        metrics["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    if not all(math.isfinite(value) for value in losses.values()):
        metrics.update(
            status="diverged",
            error=(
                f"the training loss became non-finite in epoch {epoch} "
                f"({', '.join(f'{k}={v:.4g}' for k, v in losses.items())}); the run stopped "
                "and keeps its last finite checkpoint. Lower optim.lr, raise "
                "prior.variance or align.temperature, or set optim.grad_clip."
            ),
        )
    return metrics


def _evaluation(run: _Run, last: bool) -> dict[str, Any]:
    """Validation metrics; after the last epoch, with NMI, the test metrics and every class's
    scores as well."""
    # NMI runs k-means (seconds on large sets), so only the final evaluation computes it.
    metrics, val_classes = evaluate(
        run.model, run.inputs, "val", run.splits, run.device, with_nmi=last
    )
    if last:
        test_metrics, test_classes = evaluate(run.model, run.inputs, "test", run.splits, run.device)
        metrics.update(test_metrics)
        metrics[CLASS_SCORES] = json.dumps(
            {"fields": CLASS_SCORE_FIELDS, "rows": val_classes + test_classes}
        )
    return metrics
