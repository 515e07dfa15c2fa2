"""The objective: alignment against anchors, the flow NLL and the baselines' metric losses."""

import math

import pytest
import torch

from gapan.config import METRIC_LOSSES, from_flat
from gapan.losses import GapanCriterion, alignment_loss


def test_alignment_loss_by_hand():
    # Two classes, one anchor each along the axes; the embedding lies on class 0's anchor.
    embeddings = torch.tensor([[1.0, 0.0]])
    anchors = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    loss = alignment_loss(embeddings, torch.tensor([0]), torch.tensor([0, 1]), anchors, 0.5)
    # Scores: cos/T = 2 for class 0 and 0 for class 1; CE = -log(e^2 / (e^2 + e^0)).
    assert loss.item() == pytest.approx(math.log1p(math.exp(-2.0)), rel=1e-6)


def test_alignment_takes_the_soft_maximum_over_a_class_anchors():
    embeddings = torch.tensor([[1.0, 0.0]])
    classes = torch.tensor([3, 7])  # labels are class ids, not positions
    # Class 3 has one anchor on the embedding and one opposite it; class 7 one orthogonal anchor
    # repeated twice, so both classes have the same anchor count.
    anchors = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    loss = alignment_loss(embeddings, torch.tensor([3]), classes, anchors, 1.0)
    score_3 = math.log(math.e + math.exp(-1.0))
    score_7 = math.log(2.0)
    expected = -(score_3 - math.log(math.exp(score_3) + math.exp(score_7)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def criterion_for(**flat):
    torch.manual_seed(0)
    cfg = from_flat({"flow.depth": 2, "flow.hidden": 16, "anchors.count": 4, **flat})
    return GapanCriterion(cfg, num_classes=5, dim=8)


def test_criterion_returns_every_part_and_trains_embeddings_and_flow():
    criterion = criterion_for(**{"loss.metric": "proxy_anchor"})
    embeddings = torch.randn(12, 8, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 0, 1])
    parts = criterion(embeddings, labels)
    assert set(parts) == {"loss", "nll", "align", "metric"}
    cfg = criterion.cfg.loss
    expected = parts["align"] + cfg.nll_weight * parts["nll"] + cfg.metric_weight * parts["metric"]
    torch.testing.assert_close(parts["loss"], expected)
    parts["loss"].backward()
    assert embeddings.grad.abs().sum() > 0
    assert criterion.flow.prior.means.grad.abs().sum() > 0


def test_anchors_are_targets_unless_asked():
    embeddings = torch.randn(6, 8)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    detached = criterion_for(**{"loss.nll_weight": 0.0})
    detached(embeddings, labels)["loss"].backward()
    grad = detached.flow.prior.means.grad
    assert grad is None or grad.abs().sum() == 0
    through = criterion_for(**{"loss.nll_weight": 0.0, "align.anchor_gradient": True})
    through(embeddings, labels)["loss"].backward()
    assert through.flow.prior.means.grad.abs().sum() > 0


@pytest.mark.parametrize("name", METRIC_LOSSES.names)
def test_every_metric_loss_trains_the_embeddings_and_its_proxies(name):
    # A new loss of METRIC_LOSSES is tested here: alone (no flow), it is the whole loss.
    criterion = criterion_for(
        **{"loss.align_weight": 0.0, "loss.nll_weight": 0.0, "loss.metric": name}
    )
    embeddings = torch.randn(12, 8, requires_grad=True)
    parts = criterion(embeddings, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 0, 1]))
    if name == "none":
        assert criterion.metric_loss is None and set(parts) == {"loss"}
        return
    assert set(parts) == {"loss", "metric"} and torch.isfinite(parts["loss"])
    parts["loss"].backward()
    assert embeddings.grad.abs().sum() > 0
    proxies = criterion.metric_parameters()
    assert all(proxy.grad is not None and proxy.grad.abs().sum() > 0 for proxy in proxies)


def test_a_pure_baseline_builds_no_flow():
    criterion = criterion_for(
        **{"loss.align_weight": 0.0, "loss.nll_weight": 0.0, "loss.metric": "norm_softmax"}
    )
    assert criterion.flow is None
    parts = criterion(torch.randn(6, 8), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert set(parts) == {"loss", "metric"}


def test_the_baselines_take_their_hyperparameters_from_the_config():
    baseline = {"loss.align_weight": 0.0, "loss.nll_weight": 0.0}
    proxy = criterion_for(
        **baseline, **{"loss.metric": "proxy_anchor", "loss.proxy_margin": 0.3}
    ).metric_loss
    assert (proxy.margin, proxy.alpha) == (0.3, 32.0)
    proxy = criterion_for(**baseline, **{"loss.metric": "proxy_anchor", "loss.proxy_alpha": 8.0})
    assert (proxy.metric_loss.margin, proxy.metric_loss.alpha) == (0.1, 8.0)
    softmax = criterion_for(
        **baseline, **{"loss.metric": "norm_softmax", "loss.softmax_temperature": 0.2}
    ).metric_loss
    assert softmax.temperature == 0.2
    # The temperature changes the loss of the same embeddings.
    embeddings, labels = torch.randn(6, 8), torch.tensor([0, 0, 1, 1, 2, 2])
    losses = [
        criterion_for(**baseline, **{"loss.metric": "norm_softmax", "loss.softmax_temperature": t})(
            embeddings, labels
        )["metric"]
        for t in (0.05, 0.5)
    ]
    assert not torch.isclose(losses[0], losses[1])
