"""GAPan's loss as one CUDA graph on a GPU.

The flow's arithmetic is small next to the backbone's; its cost is the number of its kernels:
several small ones per block (ActNorm, LU mixing, coupling conditioner) in the NLL, in the
inverse pass that makes the anchors, and in their backward. Launched one by one from Python,
each waits for the host to issue it, so the GPU idles between them. Captured once into a CUDA
graph (`torch.cuda.make_graphed_callables`, forward and backward), each step launches them all
at once. bench/README.md has the measured effect (`python -m bench.step`).

A graph replays fixed shapes and fixed memory, so:
- the capture comes at the first training step, after a no-grad pass over that batch in which
  ActNorm initialises itself from data, as it would in an eager first step. No eager backward
  pass may come before it: autograd keeps each parameter's gradient accumulator on the stream it
  was made on, and a capture that meets one on the default stream fails;
- a batch whose shapes differ from the captured one (a last, smaller batch) runs eagerly;
- the batch's classes come from the caller (the sampler's labels, on the CPU), because
  `torch.unique` on the GPU makes the host wait for its result's size.
"""

from __future__ import annotations

import torch
from torch import nn

from gapan.losses import GapanCriterion


class LossParts(nn.Module):
    """The criterion with tensors in and a tuple of tensors out, as a graphed callable needs.

    Args:
        criterion: Called as ``criterion(embeddings, labels, classes)``; returns a dict of
            tensors.
        names: The keys of that dict to return, in this order.
    """

    def __init__(self, criterion: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.criterion = criterion
        self.names = names

    def forward(self, embeddings, labels, classes):
        parts = self.criterion(embeddings, labels, classes)
        return tuple(parts[name] for name in self.names)


class GraphedCriterion:
    """Calls `criterion(embeddings, labels, classes)` as a CUDA graph once it can.

    `criterion` is `GapanCriterion` or any module called the same way that returns a dict of
    tensors. Its first call runs without gradients, before the capture: ActNorm initialises
    itself from that batch. Training steps only: in eval mode, and for shapes other than the
    captured ones, the criterion is called directly.

    The criterion's parameters keep receiving their gradients through autograd, so the
    optimizer, gradient clipping and checkpoints see no difference, with one caveat: autograd
    may install the graph's static gradient buffers as the parameters' `.grad`
    (pytorch/pytorch#181723), and the next replay overwrites them. A step must use its gradients
    before the next step's backward pass, as `gapan.train.train_epoch` does (one backward pass,
    clipping, the optimizer step, then `zero_grad(set_to_none=True)`); accumulating gradients
    over several graphed steps would need them cloned.
    """

    def __init__(self, criterion: nn.Module):
        self.criterion = criterion
        self._graphed: nn.Module | None = None
        self._signature: tuple | None = None

    @staticmethod
    def _signature_of(*tensors: torch.Tensor) -> tuple:
        return tuple((t.shape, t.dtype, t.requires_grad) for t in tensors)

    def __call__(
        self, embeddings: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        if not self.criterion.training:
            return self.criterion(embeddings, labels, classes)
        if self._graphed is None:
            self._capture(embeddings, labels, classes)
        if self._signature_of(embeddings, labels, classes) != self._signature:
            return self.criterion(embeddings, labels, classes)
        assert self._graphed is not None
        parts = self._graphed(embeddings, labels, classes)
        return dict(zip(self._graphed.names, parts, strict=True))

    def _capture(self, embeddings, labels, classes) -> None:
        sample = (embeddings.detach().clone().requires_grad_(embeddings.requires_grad),)
        sample += (labels.clone(), classes.clone())
        with torch.no_grad():  # ActNorm initialises itself from this batch; the names of the parts
            names = tuple(self.criterion(*sample))
        parts = LossParts(self.criterion, names)
        # Warm-up passes (on a side stream, as capture needs) compute gradients with
        # torch.autograd.grad: the parameters' .grad fields stay untouched.
        try:
            self._graphed = torch.cuda.make_graphed_callables(
                parts, sample, num_warmup_iters=3, allow_unused_input=True
            )
        except RuntimeError as error:
            # A failed capture can leave the GPU's random generator mid-capture: no eager
            # fallback in this process, but a message that says how to run without graphs.
            raise RuntimeError(
                f"capturing GAPan's loss as a CUDA graph failed ({error}); run with "
                "train.cuda_graphs=false to train it eagerly"
            ) from error
        self._signature = self._signature_of(embeddings, labels, classes)


def loss_function(criterion: GapanCriterion, device: torch.device, enabled: bool):
    """What the training loop calls: the graphed criterion where it applies, else the criterion.

    Graphs need a GPU and a loss without host-device waits; pytorch-metric-learning's losses
    (the baselines' `loss.metric`) select by masks of data-dependent size, so they stay eager.
    """
    if not enabled or device.type != "cuda":
        return criterion
    if criterion.flow is None or criterion.cfg.loss.metric != "none":
        return criterion
    return GraphedCriterion(criterion)
