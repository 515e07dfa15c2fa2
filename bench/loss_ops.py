"""Count the operations of GAPan's loss: the flow as built here against nflows' own blocks.

On a GPU the flow's cost is its number of small kernels, not their arithmetic: a CUDA graph
saves launching them one by one, not running them, so inside the graph fewer kernels is what
makes the loss cheaper. This bench runs one forward and backward pass of `GapanCriterion` (flow
NLL, anchors through the inverse flow, alignment) on a batch of embeddings, by flow depth, with
the same parameters in two flows: `gapan` as `gapan.flow` builds it, and `nflows` made of
nflows' own blocks (`ActNorm`, `LULinear`, `AffineCouplingTransform`, `CompositeTransform`). It
counts

- on CUDA, the kernels, copies and memsets the GPU runs (torch.profiler);
- on the CPU, the aten operations dispatched after autograd, views and allocations left out:
  on a GPU each is one kernel, or a few.

Each pass is timed on the device too (median of --repeats). `--compiled` adds `gapan-compiled`,
the loss compiled by torch.compile, as the step `gapan-fused` of `bench.step` captures it: on
CUDA its kernels; on the CPU the kernels inductor generates, to which its matrix products add
(one call each, outside that count).

    python -m bench.loss_ops                        # depths 0,2,4,8,16; 32 classes x 4, 512-d
    python -m bench.loss_ops --compiled --depths 8
"""

from __future__ import annotations

import argparse
import copy
import statistics
import warnings
from collections.abc import Callable
from typing import Any

import torch
from nflows.transforms import (
    ActNorm,
    AffineCouplingTransform,
    CompositeTransform,
    LULinear,
    Transform,
)
from nflows.utils import create_alternating_binary_mask
from torch.utils._python_dispatch import TorchDispatchMode

from bench.common import bench_parser, emit, environment, print_table, rounded, time_device
from bench.step import SEEN_CLASSES, experiment_config, random_batch
from gapan.config import ExperimentConfig
from gapan.cuda_graphs import LossParts
from gapan.flow import ClassConditionalFlow
from gapan.flow_blocks import (
    AlternatingAffineCoupling,
    Blocks,
    SyncFreeActNorm,
    SyncFreeLULinear,
)
from gapan.losses import GapanCriterion

# nflows' LULinear inverse (the reference's) calls the deprecated torch.triangular_solve.
warnings.filterwarnings("ignore", message=".*triangular_solve.*", category=UserWarning)

# Operations that make no kernel: views, metadata and allocations.
NO_KERNEL = {
    "alias", "as_strided", "detach", "diagonal", "empty", "empty_like", "empty_strided",
    "expand", "lift_fresh", "new_empty", "new_empty_strided", "permute", "reshape", "select",
    "slice", "split", "squeeze", "t", "transpose", "unbind", "unflatten", "unsqueeze", "view",
    "_reshape_alias", "_unsafe_view",
}  # fmt: skip


def nflows_twin(criterion: GapanCriterion) -> GapanCriterion:
    """A copy of `criterion` whose flow is made of nflows' own blocks, with the same parameters
    and ActNorm state."""
    twin = copy.deepcopy(criterion)
    if twin.flow is not None and isinstance(twin.flow.transform, Blocks):
        blocks = [_nflows_block(block) for block in twin.flow.transform.blocks]
        twin.flow = ClassConditionalFlow(CompositeTransform(blocks), twin.flow.prior)
    return twin


def _nflows_block(block: Transform) -> Transform:
    if isinstance(block, SyncFreeActNorm):
        twin: Transform = ActNorm(block.log_scale.numel())
    elif isinstance(block, SyncFreeLULinear):
        twin = LULinear(block.features)
    elif isinstance(block, AlternatingAffineCoupling):
        mask = create_alternating_binary_mask(block.features, even=block.even)
        twin = AffineCouplingTransform(mask, lambda *_: block.transform_net)
    else:
        return block
    twin.load_state_dict(block.state_dict())
    return twin.to(next(block.parameters()).device)


class _CountOperations(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ not in NO_KERNEL:
            self.count += 1
        return func(*args, **(kwargs or {}))


def count_operations(work: Callable[[], Any], device: torch.device) -> int:
    """Kernels `work` runs on CUDA; aten operations that make kernels on the CPU."""
    if device.type == "cuda":
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile

        torch.cuda.synchronize(device)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as trace:
            work()
            torch.cuda.synchronize(device)
        return sum(event.device_type == DeviceType.CUDA for event in trace.events())
    with _CountOperations() as counter:
        work()
    return counter.count


def generated_kernels(work: Callable[[], Any]) -> int:
    """Kernels inductor generates while compiling `work` (matrix products are calls, not these)."""
    from torch._inductor import metrics

    metrics.reset()
    work()
    return metrics.generated_kernel_count


def loss_pass(
    loss: Callable, criterion: GapanCriterion, batch: tuple[torch.Tensor, ...]
) -> Callable[[], None]:
    """One forward and backward pass, gradients reset as the trainer resets them."""
    embeddings, labels, classes = batch

    def run() -> None:
        criterion.zero_grad(set_to_none=True)
        embeddings.grad = None
        loss(embeddings, labels, classes)[0].backward()

    return run


def measure(
    cfg: ExperimentConfig, device: torch.device, repeats: int, compiled: bool
) -> list[dict[str, Any]]:
    """Rows of `gapan`, `nflows` (and `gapan-compiled`) at `cfg.flow.depth`."""
    torch.manual_seed(0)
    criterion = GapanCriterion(cfg, SEEN_CLASSES, cfg.model.embed_dim).to(device).train()
    _, labels, classes = random_batch(cfg, device)
    embeddings = torch.randn(len(labels), cfg.model.embed_dim, device=device, requires_grad=True)
    batch = (embeddings, labels, classes)
    names = tuple(criterion(*batch))  # also ActNorm's initialisation, before the twin copies it
    twin = nflows_twin(criterion)
    flows: dict[str, tuple[Callable, GapanCriterion]] = {
        "gapan": (LossParts(criterion, names), criterion),
        "nflows": (LossParts(twin, names), twin),
    }
    if compiled:
        fused = torch.compile(LossParts(criterion, names), dynamic=False)
        flows["gapan-compiled"] = (fused, criterion)
    rows = []
    for name, (loss, owner) in flows.items():
        run = loss_pass(loss, owner, batch)
        row: dict[str, Any] = {"depth": cfg.flow.depth, "flow": name}
        try:
            if name == "gapan-compiled" and device.type != "cuda":
                row["generated_kernels"] = generated_kernels(run)
            else:
                run()  # warm-up (compilation, allocator, cuBLAS handles)
                row["operations"] = count_operations(run, device)
        except Exception as error:  # torch.compile needs a C compiler (and Triton on CUDA)
            if name != "gapan-compiled":
                raise
            print(f"  depth {cfg.flow.depth} {name}: failed, {type(error).__name__}: {error}")
            continue
        row["ms"] = rounded(
            1000 * statistics.median(time_device(device, run)[0] for _ in range(repeats))
        )
        rows.append(row)
    reference = next(row for row in rows if row["flow"] == "nflows")
    for row in rows:
        if "operations" in row:
            row["ratio"] = rounded(row["operations"] / reference["operations"], 3)
        row["ms_ratio"] = rounded(row["ms"] / reference["ms"], 3)
    return rows


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = bench_parser("loss_ops", __doc__)
    parser.add_argument("--depths", default="0,2,4,8,16", help="flow depths (default 0,2,4,8,16)")
    parser.add_argument("--classes", type=int, default=32, help="classes per batch (default 32)")
    parser.add_argument("--samples-per-class", type=int, default=4)
    parser.add_argument("--anchors", type=int, default=16, help="anchors per class (default 16)")
    parser.add_argument("--repeats", type=int, default=10, help="timed passes (default 10)")
    parser.add_argument(
        "--compiled", action="store_true", help="also the loss compiled by torch.compile"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    device = torch.device(args.device)
    batch = args.classes * args.samples_per_class
    rows = []
    for depth in [int(value) for value in args.depths.split(",") if value.strip()]:
        cfg = experiment_config(
            "resnet50", depth, batch, args.samples_per_class, 224, args.anchors, device, False
        )
        found = measure(cfg, device, args.repeats, args.compiled)
        for row in found:
            count = row.get("operations", f"{row.get('generated_kernels')} generated kernels +")
            print(f"  depth {depth} {row['flow']}: {count} operations, {row['ms']} ms", flush=True)
        rows += found
    counted = "GPU kernels" if device.type == "cuda" else "aten operations"
    print_table(
        f"GAPan's loss, one forward + backward pass, batch {batch}, {args.anchors} anchors per "
        f"class; operations = {counted}, ratio = against nflows' blocks, {device.type}",
        rows,
        ["depth", "flow", "operations", "generated_kernels", "ratio", "ms", "ms_ratio"],
    )
    emit(
        {
            "bench": "loss_ops",
            "environment": environment(device),
            "counted": counted,
            "batch": batch,
            "anchors": args.anchors,
            "rows": rows,
        },
        args.json_out,
    )


if __name__ == "__main__":
    main()
