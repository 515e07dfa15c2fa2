"""The flow: invertibility, exact log-determinants and the class priors, for every family; its
blocks against nflows' own classes are in test_flow_blocks.py."""

import math

import pytest
import torch

from gapan.config import FLOW_FAMILIES, FlowConfig, PriorConfig
from gapan.flow import build_flow

FAMILIES = FLOW_FAMILIES.names  # a new family is tested by every test below


def tiny_flow(family: str, depth: int = 3, features: int = 6, classes: int = 3, variance=1.0):
    torch.manual_seed(0)
    flow = build_flow(
        features, classes, FlowConfig(depth=depth, family=family, hidden=8), PriorConfig(variance)
    ).double()
    # One training-mode pass initialises ActNorm from data, as in training.
    flow.train()
    flow.log_prob(torch.randn(32, features, dtype=torch.float64), context=torch.arange(32) % 3)
    return flow.eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_flow_is_invertible(family):
    flow = tiny_flow(family)
    x = torch.randn(10, 6, dtype=torch.float64)
    z, logdet = flow.transform(x)
    x_back, inverse_logdet = flow.transform.inverse(z)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(inverse_logdet, -logdet)


@pytest.mark.parametrize("family", FAMILIES)
def test_log_determinant_matches_autograd(family):
    flow = tiny_flow(family)
    x = torch.randn(4, 6, dtype=torch.float64)
    _, logdet = flow.transform(x)
    for i in range(len(x)):
        jacobian = torch.autograd.functional.jacobian(
            lambda v: flow.transform(v.unsqueeze(0))[0][0], x[i]
        )
        torch.testing.assert_close(torch.linalg.slogdet(jacobian)[1], logdet[i])


@pytest.mark.parametrize("family", FAMILIES)
def test_log_prob_is_change_of_variables(family):
    flow = tiny_flow(family)
    x = torch.randn(5, 6, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1])
    z, logdet = flow.transform(x)
    prior = torch.distributions.Normal(flow.prior.means[labels], 1.0)
    expected = prior.log_prob(z).sum(dim=1) + logdet
    torch.testing.assert_close(flow.log_prob(x, context=labels), expected)


def test_nll_at_depth_zero_is_the_gaussian_closed_form():
    variance = 0.3
    flow = tiny_flow("glow", depth=0, variance=variance)
    x = torch.randn(7, 6, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 0])
    means = flow.prior.means[labels]
    squared = ((x - means) ** 2).sum(dim=1)
    nll = 0.5 * squared / variance + 0.5 * 6 * math.log(2 * math.pi * variance)
    torch.testing.assert_close(flow.nll_per_dim(x, labels), nll.mean() / 6)


@pytest.mark.parametrize("family", FAMILIES)
def test_anchors_come_from_the_high_density_region(family):
    flow = tiny_flow(family, features=4)
    classes = torch.tensor([0, 2])
    torch.manual_seed(1)
    anchors = flow.anchors(classes, count=4000, temperature=0.5)
    assert anchors.shape == (2, 4000, 4)
    z, _ = flow.transform(anchors.reshape(-1, 4))
    z = z.reshape(2, 4000, 4)
    # Mapped back to the latent space, anchors sit around their class mean with std tau * sigma.
    torch.testing.assert_close(z.mean(dim=1), flow.prior.means[classes], atol=0.05, rtol=0)
    torch.testing.assert_close(
        z.std(dim=1), torch.full((2, 4), 0.5, dtype=z.dtype), atol=0.03, rtol=0
    )


def test_learned_variance_is_a_parameter_and_fixed_is_not():
    learned = build_flow(4, 2, FlowConfig(depth=1), PriorConfig(0.5, learn_variance=True))
    fixed = build_flow(4, 2, FlowConfig(depth=1), PriorConfig(0.5, learn_variance=False))
    assert any(p is learned.prior.log_variance for p in learned.parameters())
    assert not any(p is fixed.prior.log_variance for p in fixed.parameters())
    assert fixed.prior.log_variance.item() == pytest.approx(math.log(0.5))


@pytest.mark.parametrize("family", FAMILIES)
def test_the_flow_computes_what_nflows_own_composition_computes(family):
    from nflows.transforms import CompositeTransform

    flow = tiny_flow(family, depth=4, features=8)
    theirs = CompositeTransform(list(flow.transform.blocks))
    x = torch.randn(9, 8, dtype=torch.float64)
    for mine, reference in zip(flow.transform(x), theirs(x), strict=True):
        torch.testing.assert_close(mine, reference)
    for mine, reference in zip(flow.transform.inverse(x), theirs.inverse(x), strict=True):
        torch.testing.assert_close(mine, reference)
    # Anchors skip the inverse's log-determinants, and nothing else.
    classes = torch.tensor([0, 2])
    torch.manual_seed(3)
    anchors = flow.anchors(classes, count=6, temperature=0.5)
    torch.manual_seed(3)
    latents = flow.prior.sample_at_temperature(6, classes, 0.5).reshape(-1, 8)
    torch.testing.assert_close(anchors.reshape(-1, 8), theirs.inverse(latents)[0])
