"""The normalizing flow with one Gaussian prior per seen class, and the anchors drawn from it.

The flow maps embeddings x to latents z = f(x); each seen class c has the prior
z | c ~ N(mu_c, sigma^2 I). Training maximises the exact likelihood
log p(x | c) = log N(f(x); mu_c, sigma^2 I) + log |det df/dx|. Anchors are latent samples from the
high-density part of a class's prior, N(mu_c, (tau sigma)^2 I) with tau < 1, mapped back through
the inverse flow: appearance-aware targets in the embedding space. The flow is made of the
blocks in `gapan.flow_blocks`: nflows' own, with fewer kernels.

References:
    Dinh et al., "Density estimation using Real NVP", ICLR 2017.
    Kingma and Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from nflows.distributions.base import Distribution
from nflows.nn.nets import ResidualNet
from nflows.transforms import IdentityTransform, RandomPermutation, Transform
from torch import nn

from gapan.config import FLOW_FAMILIES, FlowConfig, PriorConfig
from gapan.flow_blocks import (
    AlternatingAffineCoupling,
    Blocks,
    PriorConditionedFlow,
    SyncFreeActNorm,
    SyncFreeLULinear,
    inverse_outputs,
)


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


class ClassConditionalFlow(PriorConditionedFlow):
    """A flow whose base distribution is a `ClassPrior`; context = class indices.

    The class index conditions the prior only: one transform is shared by all classes.
    """

    def __init__(self, transform: Transform, prior: ClassPrior):
        super().__init__(transform, prior)
        self.features = prior.features

    @property
    def prior(self) -> ClassPrior:
        """The classes' priors, the flow's base distribution."""
        return self.distribution

    def _sample(self, num_samples: int, context: torch.Tensor) -> torch.Tensor:
        return self.anchors(context, num_samples, temperature=1.0)

    def nll_per_dim(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood per dimension, in nats."""
        return -self.log_prob(inputs, context=labels).mean() / self.features

    def anchors(self, classes: torch.Tensor, count: int, temperature: float) -> torch.Tensor:
        """`count` anchors per class, shape (len(classes), count, features), in input space."""
        latents = self.prior.sample_at_temperature(count, classes, temperature)
        points = inverse_outputs(self.transform, latents.reshape(-1, self.features))
        return points.reshape(len(classes), count, self.features)


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


def glow_block(features: int, coupling: Transform) -> list[Transform]:
    """Glow's step: ActNorm, an invertible linear map (LU-factorised), the affine coupling."""
    return [SyncFreeActNorm(features), SyncFreeLULinear(features), coupling]


def realnvp_block(features: int, coupling: Transform) -> list[Transform]:
    """RealNVP's step (with ActNorm): ActNorm, the affine coupling, a random permutation."""
    return [SyncFreeActNorm(features), coupling, RandomPermutation(features)]


def build_transform(features: int, cfg: FlowConfig) -> Transform:
    """`cfg.depth` blocks of `cfg.family` (`gapan.config.FLOW_FAMILIES`); the identity at depth 0.

    Each block's coupling layer is built first, then the family's layers around it: the order in
    which the seed draws their initial weights.
    """
    if cfg.depth == 0:
        return IdentityTransform()
    block = FLOW_FAMILIES.get(cfg.family)
    blocks: list[Transform] = []
    for index in range(cfg.depth):
        coupling = _coupling(features, cfg, even=index % 2 == 0)
        blocks += block(features, coupling)
    return Blocks(blocks)


def build_flow(
    features: int, num_classes: int, flow: FlowConfig, prior: PriorConfig
) -> ClassConditionalFlow:
    return ClassConditionalFlow(
        build_transform(features, flow),
        ClassPrior(num_classes, features, prior.variance, prior.learn_variance),
    )
