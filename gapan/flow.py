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
        points, _ = self._transform.inverse(latents.reshape(-1, self.features))
        return points.reshape(len(classes), count, self.features)


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
        outputs = self.scale.view(1, -1) * inputs + self.shift.view(1, -1)
        logabsdet = self.log_scale.sum().expand(inputs.shape[0])
        return outputs, logabsdet


class SyncFreeLULinear(LULinear):
    """nflows' LULinear with its triangle positions kept on the parameters' device, and a faster
    inverse.

    nflows indexes the weight matrices with NumPy index arrays, which torch copies to the GPU on
    every call: two arrays of D(D-1)/2 positions per triangle (2 MB each at 512 features), in
    every forward and inverse pass, with the host waiting for each copy. Here the positions are
    buffers (not saved: the state dict stays nflows'), and L and U are scattered from them.

    The inverse (every anchor goes through it) solves with `torch.linalg.solve_triangular` on
    the row-major inputs, where nflows calls the deprecated `torch.triangular_solve` on their
    transpose: the same solution, in 2.6 ms instead of 5.8 ms for 256 x 512 on one CPU thread.
    """

    def __init__(self, features: int, identity_init: bool = True, eps: float = 1e-3):
        super().__init__(features, using_cache=False, identity_init=identity_init, eps=eps)
        rows, cols = torch.tril_indices(features, features, offset=-1)  # nflows' order
        self.register_buffer("lower_positions", rows * features + cols, persistent=False)
        rows, cols = torch.triu_indices(features, features, offset=1)
        self.register_buffer("upper_positions", rows * features + cols, persistent=False)
        self.register_buffer("identity", torch.eye(features), persistent=False)

    def _create_lower_upper(self) -> tuple[torch.Tensor, torch.Tensor]:
        def square(entries: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
            flat = entries.new_zeros(self.features * self.features)
            return flat.scatter(0, positions, entries).view(self.features, self.features)

        lower = square(self.lower_entries, self.lower_positions) + self.identity
        upper = square(self.upper_entries, self.upper_positions) + torch.diag(self.upper_diag)
        return lower, upper

    def inverse_no_cache(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The forward pass is y = x U^T L^T + b on rows, so x = (y - b) L^-T U^-T.
        lower, upper = self._create_lower_upper()
        outputs = torch.linalg.solve_triangular(
            lower.T, inputs - self.bias, upper=True, left=False, unitriangular=True
        )
        outputs = torch.linalg.solve_triangular(upper.T, outputs, upper=False, left=False)
        logabsdet = -self.logabsdet() * inputs.new_ones(outputs.shape[0])
        return outputs, logabsdet


def _coupling(features: int, cfg: FlowConfig, even: bool) -> AffineCouplingTransform:
    def conditioner(in_features: int, out_features: int) -> nn.Module:
        return ResidualNet(
            in_features,
            out_features,
            hidden_features=cfg.hidden,
            num_blocks=cfg.conditioner_blocks,
            activation=F.relu,
        )

    return AffineCouplingTransform(create_alternating_binary_mask(features, even=even), conditioner)


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
    return CompositeTransform(blocks)


def build_flow(
    features: int, num_classes: int, flow: FlowConfig, prior: PriorConfig
) -> ClassConditionalFlow:
    return ClassConditionalFlow(
        build_transform(features, flow),
        ClassPrior(num_classes, features, prior.variance, prior.learn_variance),
    )
