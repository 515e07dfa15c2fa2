"""GAPan's loss as a CUDA graph gives what the eager loss gives (on a GPU; skipped without one).

The compiled variant is the bench's (`bench.step`'s `gapan-fused`), captured by the same
`GraphedCriterion`; the trainer's is kernel by kernel.
"""

import pytest
import torch

from gapan import cuda_graphs
from gapan.config import from_flat
from gapan.losses import GapanCriterion

CLASSES, PER_CLASS, DIM = 8, 4, 64


def criterion_and_batch(device, **overrides):
    cfg = from_flat({"flow.depth": 3, "flow.hidden": 32, "anchors.count": 4, **overrides})
    torch.manual_seed(0)
    criterion = GapanCriterion(cfg, 20, DIM).to(device).train()
    classes = torch.randperm(20)[:CLASSES].sort().values
    labels = classes.repeat_interleave(PER_CLASS)
    return criterion, labels.to(device), classes.to(device)


def test_on_the_cpu_the_loss_stays_the_criterion():
    criterion, _, _ = criterion_and_batch(torch.device("cpu"))
    assert cuda_graphs.loss_function(criterion, torch.device("cpu"), True) is criterion


def test_graphs_are_left_to_losses_without_host_waits():
    cuda = torch.device("cuda")  # loss_function only decides here; nothing runs on the device
    criterion, _, _ = criterion_and_batch(torch.device("cpu"))
    assert cuda_graphs.loss_function(criterion, cuda, False) is criterion
    assert isinstance(
        cuda_graphs.loss_function(criterion, cuda, True), cuda_graphs.GraphedCriterion
    )
    for overrides in (
        {"loss.metric": "proxy_anchor"},
        {"loss.align_weight": 0.0, "loss.nll_weight": 0.0},
    ):
        baseline, _, _ = criterion_and_batch(torch.device("cpu"), **overrides)
        assert cuda_graphs.loss_function(baseline, cuda, True) is baseline


def test_loss_parts_are_the_criterions_in_the_order_asked():
    criterion, labels, classes = criterion_and_batch(torch.device("cpu"))
    embeddings = torch.randn(len(labels), DIM)
    torch.manual_seed(3)
    expected = criterion(embeddings, labels, classes)
    torch.manual_seed(3)
    parts = cuda_graphs.LossParts(criterion, ("align", "loss"))(embeddings, labels, classes)
    assert len(parts) == 2
    torch.testing.assert_close(parts[0], expected["align"])
    torch.testing.assert_close(parts[1], expected["loss"])


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
@pytest.mark.parametrize("compiled", [False, True], ids=["kernel-by-kernel", "compiled"])
def test_the_graphed_loss_and_its_gradients_match_the_eager_ones(compiled):
    device = torch.device("cuda")
    # No input noise: the likelihood part is deterministic, so both must agree to rounding.
    criterion, labels, classes = criterion_and_batch(device, **{"flow.input_noise": 0.0})
    if compiled:
        from bench.step import fused_loss_function

        graphed = fused_loss_function(criterion)
    else:
        graphed = cuda_graphs.loss_function(criterion, device, True)
        assert isinstance(graphed, cuda_graphs.GraphedCriterion)
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(len(labels), DIM, generator=generator) for _ in range(6)]
    for batch in batches:
        embeddings = batch.to(device).requires_grad_(True)
        parts = graphed(embeddings, labels, classes)
        parts["nll"].backward()
        graphed_grad = embeddings.grad.clone()
        flow_grads = [p.grad.clone() for p in criterion.flow.parameters()]
        criterion.zero_grad(set_to_none=True)

        embeddings.grad = None
        eager = criterion(embeddings, labels, classes)
        eager["nll"].backward()
        torch.testing.assert_close(parts["nll"], eager["nll"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(graphed_grad, embeddings.grad, rtol=1e-3, atol=1e-6)
        for ours, theirs in zip(flow_grads, criterion.flow.parameters(), strict=True):
            torch.testing.assert_close(ours, theirs.grad, rtol=1e-3, atol=1e-6)
        criterion.zero_grad(set_to_none=True)
        assert set(parts) == {"loss", "nll", "align"}
        assert torch.isfinite(parts["align"])
        assert graphed._graphed is not None  # captured at the first step, replayed since


@needs_cuda
def test_a_batch_of_another_shape_runs_eagerly():
    device = torch.device("cuda")
    criterion, labels, classes = criterion_and_batch(device)
    graphed = cuda_graphs.loss_function(criterion, device, True)
    for _ in range(3):
        graphed(torch.randn(len(labels), DIM, device=device, requires_grad=True), labels, classes)
    smaller = graphed(
        torch.randn(len(labels) - PER_CLASS, DIM, device=device, requires_grad=True),
        labels[:-PER_CLASS],
        classes[:-1],
    )
    smaller["loss"].backward()
    assert torch.isfinite(smaller["loss"])
