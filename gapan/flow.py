"""The normalizing flow with one Gaussian prior per seen class, and the anchors drawn from it.

The flow maps embeddings x to latents z = f(x); each seen class c has the prior
z | c ~ N(mu_c, sigma^2 I). Training maximises the exact likelihood
log p(x | c) = log N(f(x); mu_c, sigma^2 I) + log |det df/dx|. Anchors are latent samples from the
high-density part of a class's prior, N(mu_c, (tau sigma)^2 I) with tau < 1, mapped back through
the inverse flow: appearance-aware targets in the embedding space.

References:
    Dinh et al., "Density estimation using Real NVP", ICLR 2017.
    Kingma and Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from nflows.distributions.base import Distribution
from nflows.flows.base import Flow
from nflows.nn.nets import ResidualNet
from nflows.transforms import (
    ActNorm,
    AffineCouplingTransform,
    CompositeTransform,
    IdentityTransform,
    LULinear,
    RandomPermutation,
    Transform,
)
from nflows.utils import create_alternating_binary_mask
from torch import nn

from gapan.config import FlowConfig, PriorConfig


class ClassPrior(Distribution):
    """N(mu_c, sigma^2 I) for each class c; the context is a tensor of class indices."""

    def __init__(self, num_classes: int, features: int, variance: float, learn_variance: bool):
        super().__init__()
        self.features = features
        # Random means are far apart in high dimension (distance ~ sqrt(2 * features)), so the
        # classes start separated in the latent space.
        self.means = nn.Parameter(torch.randn(num_classes, features))
        log_variance = torch.tensor(math.log(variance))
        if learn_variance:
            self.log_variance = nn.Parameter(log_variance)
        else:
            self.register_buffer("log_variance", log_variance)

    def _log_prob(self, inputs: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        squared = (inputs - self.means[context]).pow(2).sum(dim=1)
        return -0.5 * (
            squared / self.log_variance.exp()
            + self.features * (math.log(2 * math.pi) + self.log_variance)
        )

    def _sample(self, num_samples: int, context: torch.Tensor) -> torch.Tensor:
        return self.sample_at_temperature(num_samples, context, temperature=1.0)

    def sample_at_temperature(
        self, num_samples: int, context: torch.Tensor, temperature: float
    ) -> torch.Tensor:
        """Samples of shape (len(context), num_samples, features) from N(mu_c, (tau sigma)^2 I)."""
        means = self.means[context].unsqueeze(1)
        noise = torch.randn(
            len(context), num_samples, self.features, device=means.device, dtype=means.dtype
        )
        return means + temperature * (0.5 * self.log_variance).exp() * noise


class ClassConditionalFlow(Flow):
    """An nflows `Flow` whose base distribution is a `ClassPrior`; context = class indices."""

    def __init__(self, transform: Transform, prior: ClassPrior):
        super().__init__(transform, prior)
        self.features = prior.features

    @property
    def prior(self) -> ClassPrior:
        return self._distribution

    @property
    def transform(self) -> Transform:
        """The invertible map from embeddings to latents (nflows keeps it private)."""
        return self._transform

    # The class index conditions the prior only; the transform is shared by all classes, so the
    # context is not passed to it (nflows' `Flow` would hand it to the conditioners).
    def _log_prob(self, inputs: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        latents, logabsdet = self._transform(inputs)
        return self.prior.log_prob(latents, context=context) + logabsdet

    def _sample(self, num_samples: int, context: torch.Tensor) -> torch.Tensor:
        return self.anchors(context, num_samples, temperature=1.0)

    def nll_per_dim(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood per dimension, in nats."""
        return -self.log_prob(inputs, context=labels).mean() / self.features

    def anchors(self, classes: torch.Tensor, count: int, temperature: float) -> torch.Tensor:
        """`count` anchors per class, shape (len(classes), count, features), in input space."""
        latents = self.prior.sample_at_temperature(count, classes, temperature)
        points = inverse_outputs(self._transform, latents.reshape(-1, self.features))
        return points.reshape(len(classes), count, self.features)


# The flow's cost on a GPU is the number of its small kernels, not their arithmetic, so the
# blocks below are nflows' own with fewer kernels for the same results (`python -m
# bench.loss_ops` counts them against nflows' blocks).


def inverse_outputs(transform: Transform, inputs: torch.Tensor) -> torch.Tensor:
    """`transform.inverse(inputs)` without the log-determinant, which anchors never use.

    Every nflows block computes its inverse's log-determinant too, operations that an anchor
    pass pays for in every block and never reads. The blocks built here skip it; any other
    block runs its full inverse.
    """
    if hasattr(transform, "inverse_outputs"):
        return transform.inverse_outputs(inputs)
    return transform.inverse(inputs)[0]


class Blocks(CompositeTransform):
    """nflows' CompositeTransform, summing the blocks' log-determinants in one kernel (nflows
    adds them in place one block at a time)."""

    @staticmethod
    def _cascade(inputs, funcs, context):
        outputs, logabsdets = inputs, []
        for func in funcs:
            outputs, logabsdet = func(outputs, context)
            logabsdets.append(logabsdet)
        return outputs, torch.stack(logabsdets).sum(dim=0)

    @property
    def blocks(self) -> list[Transform]:
        """The blocks, first to last (nflows keeps them private)."""
        return list(self._transforms)

    def inverse_outputs(self, inputs: torch.Tensor) -> torch.Tensor:
        for block in reversed(self._transforms):
            inputs = inverse_outputs(block, inputs)
        return inputs


class SyncFreeActNorm(ActNorm):
    """nflows' ActNorm without a GPU-to-CPU wait per call.

    nflows reads its tensor `initialized` flag on every training forward pass, which makes the
    CPU wait for the GPU once per block. Here the flag is mirrored in a Python bool, read from
    the tensor once (after a checkpoint load it is already set) and then never again.
    """

    def __init__(self, features: int):
        super().__init__(features)
        self._initialized_seen = False

    def forward(self, inputs: torch.Tensor, context=None):
        if self.training and not self._initialized_seen:
            if not self.initialized:
                self._initialize(inputs)
            self._initialized_seen = True
        outputs = torch.addcmul(self.shift.view(1, -1), inputs, self.scale.view(1, -1))
        logabsdet = self.log_scale.sum().expand(inputs.shape[0])
        return outputs, logabsdet

    def inverse_outputs(self, inputs: torch.Tensor) -> torch.Tensor:
        return (inputs - self.shift.view(1, -1)) * torch.exp(-self.log_scale).view(1, -1)


class SyncFreeLULinear(LULinear):
    """nflows' LULinear with L and U made by one scatter on the parameters' device, and its
    inverse solved without transposes.

    nflows indexes the weight matrices with NumPy index arrays, which torch copies to the GPU on
    every call: two arrays of D(D-1)/2 positions per triangle, in every forward and inverse
    pass, with the host waiting for each copy, then writes each triangle and diagonal in its own
    kernel. Here all entries of L and U (with L's unit diagonal) are scattered at once from
    positions kept as a buffer (not saved: the state dict stays nflows'), and the softplus of
    U's diagonal is shared with the log-determinant.

    The inverse (every anchor goes through it) solves with `torch.linalg.solve_triangular` on
    the row-major inputs as they come, where nflows solves their transpose with the deprecated
    `torch.triangular_solve` and transposes the solution back: the same solution, computed in
    the inputs' own layout.
    """

    def __init__(self, features: int, identity_init: bool = True, eps: float = 1e-3):
        super().__init__(features, using_cache=False, identity_init=identity_init, eps=eps)
        # Positions in the flattened pair (L, U) of the entries `_lower_upper_diagonal` joins.
        square = features * features
        lower_rows, lower_cols = torch.tril_indices(features, features, offset=-1)  # nflows' order
        upper_rows, upper_cols = torch.triu_indices(features, features, offset=1)
        diagonal = torch.arange(features) * (features + 1)
        positions = [
            lower_rows * features + lower_cols,
            diagonal,
            square + upper_rows * features + upper_cols,
            square + diagonal,
        ]
        self.register_buffer("positions", torch.cat(positions), persistent=False)
        self.register_buffer("ones", torch.ones(features), persistent=False)

    def _lower_upper_diagonal(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """L, U and U's diagonal."""
        diagonal = self.upper_diag
        entries = torch.cat([self.lower_entries, self.ones, self.upper_entries, diagonal])
        pair = entries.new_zeros(2 * self.features * self.features)
        pair.scatter_(0, self.positions, entries)  # in place: no copy of 2 D^2 zeros
        lower, upper = pair.view(2, self.features, self.features)
        return lower, upper, diagonal

    def _create_lower_upper(self) -> tuple[torch.Tensor, torch.Tensor]:
        lower, upper, _ = self._lower_upper_diagonal()
        return lower, upper

    def forward_no_cache(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lower, upper, diagonal = self._lower_upper_diagonal()
        outputs = F.linear(F.linear(inputs, upper), lower, self.bias)
        return outputs, torch.log(diagonal).sum().expand(inputs.shape[0])

    def inverse_no_cache(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inverse_outputs(inputs), -self.logabsdet().expand(inputs.shape[0])

    def inverse_outputs(self, inputs: torch.Tensor) -> torch.Tensor:
        # The forward pass is y = x U^T L^T + b on rows, so x = (y - b) L^-T U^-T.
        lower, upper = self._create_lower_upper()
        outputs = torch.linalg.solve_triangular(
            lower.T, inputs - self.bias, upper=True, left=False, unitriangular=True
        )
        return torch.linalg.solve_triangular(upper.T, outputs, upper=False, left=False)


class AlternatingAffineCoupling(AffineCouplingTransform):
    """nflows' affine coupling on its alternating mask, with the halves taken as views.

    nflows gathers the two halves with index tensors and scatters them back into a new tensor:
    four indexing kernels a pass, and more in the backward pass. With an alternating mask each
    half is every other feature: a view of the inputs, interleaved back by one stack. The
    parameters, buffers and results are nflows' own.
    """

    def __init__(self, features: int, even: bool, conditioner):
        super().__init__(create_alternating_binary_mask(features, even=even), conditioner)
        self.even = even  # as in nflows: transform features 0, 2, 4, ..., keep the others
        self._transformed = slice(0 if even else 1, None, 2)
        self._kept = slice(1 if even else 0, None, 2)

    def _split(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(kept, transformed) halves of the features."""
        if self.features % 2:
            return inputs[:, self._kept], inputs[:, self._transformed]
        # Pairs of neighbours: their backward pass is one stack, not two scatters and a sum.
        first, second = inputs.unflatten(1, (-1, 2)).unbind(2)
        return (second, first) if self.even else (first, second)

    def _merge(self, kept: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
        if self.features % 2:
            outputs = kept.new_empty(kept.shape[0], self.features)
            outputs[:, self._kept] = kept
            outputs[:, self._transformed] = transformed
            return outputs
        pair = (transformed, kept) if self.even else (kept, transformed)
        return torch.stack(pair, dim=2).flatten(1)

    def _scale_and_shift_of(self, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # nflows' `_scale_and_shift`, with the conditioner's outputs split as one view (their
        # backward pass is one stack, not two scatters and a sum).
        shift, unconstrained_scale = self.transform_net(kept).unflatten(1, (2, -1)).unbind(1)
        return torch.sigmoid(unconstrained_scale + 2) + 1e-3, shift

    def forward(self, inputs: torch.Tensor, context=None):
        kept, transformed = self._split(inputs)
        scale, shift = self._scale_and_shift_of(kept)
        logabsdet = torch.log(scale).sum(dim=1)
        return self._merge(kept, transformed * scale + shift), logabsdet

    def inverse(self, inputs: torch.Tensor, context=None):
        outputs, scale = self._inverse_and_scale(inputs)
        return outputs, -torch.log(scale).sum(dim=1)

    def inverse_outputs(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._inverse_and_scale(inputs)[0]

    def _inverse_and_scale(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept, transformed = self._split(inputs)
        scale, shift = self._scale_and_shift_of(kept)
        return self._merge(kept, (transformed - shift) / scale), scale


def _coupling(features: int, cfg: FlowConfig, even: bool) -> AlternatingAffineCoupling:
    def conditioner(in_features: int, out_features: int) -> nn.Module:
        return ResidualNet(
            in_features,
            out_features,
            hidden_features=cfg.hidden,
            num_blocks=cfg.conditioner_blocks,
            activation=F.relu,
        )

    return AlternatingAffineCoupling(features, even, conditioner)


def build_transform(features: int, cfg: FlowConfig) -> Transform:
    """`cfg.depth` blocks of ActNorm, affine coupling and mixing; the identity at depth 0."""
    if cfg.depth == 0:
        return IdentityTransform()
    blocks: list[Transform] = []
    for index in range(cfg.depth):
        coupling = _coupling(features, cfg, even=index % 2 == 0)
        if cfg.family == "glow":
            blocks += [SyncFreeActNorm(features), SyncFreeLULinear(features), coupling]
        elif cfg.family == "realnvp":
            blocks += [SyncFreeActNorm(features), coupling, RandomPermutation(features)]
        else:  # config.py restricts the names; this guards a new family added there only
            raise ValueError(f"unknown flow family {cfg.family!r}")
    return Blocks(blocks)


def build_flow(
    features: int, num_classes: int, flow: FlowConfig, prior: PriorConfig
) -> ClassConditionalFlow:
    return ClassConditionalFlow(
        build_transform(features, flow),
        ClassPrior(num_classes, features, prior.variance, prior.learn_variance),
    )
