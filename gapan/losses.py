"""GAPan's training objective: prior-driven alignment + flow likelihood (+ an optional metric loss).

Every loss returns a dict with the total under ``"loss"`` and each named part beside it, so the
trainer logs all parts without knowing them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gapan.config import METRIC_LOSSES, ExperimentConfig, LossConfig
from gapan.flow import ClassConditionalFlow, build_flow


def alignment_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    classes: torch.Tensor,
    anchors: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Cross-entropy over the batch's classes, each scored by its anchors.

    A class's score for an embedding is the log-sum-exp of the cosine similarities to its
    anchors over `temperature`: a soft maximum, so an embedding only needs to be near one of the
    class's appearance modes.

    Args:
        embeddings: (B, D) embeddings (normalised here).
        labels: (B,) class of each embedding; every label must appear in `classes`.
        classes: (C,) the classes that have anchors, sorted.
        anchors: (C, K, D) anchors of each class in `classes` (normalised here).
    """
    embeddings = F.normalize(embeddings.float(), dim=-1)
    anchors = F.normalize(anchors.float(), dim=-1)
    similarities = torch.einsum("bd,ckd->bck", embeddings, anchors) / temperature
    class_scores = similarities.logsumexp(dim=2)
    targets = torch.searchsorted(classes, labels)  # `classes` is sorted
    return F.cross_entropy(class_scores, targets)


# The standard baselines that `loss.metric` names (`gapan.config.METRIC_LOSSES`), from
# pytorch-metric-learning with their papers' values by default. It is imported by each builder:
# its import is slow, and trial workers and commands without a metric loss should not pay for it.


def proxy_anchor_loss(cfg: LossConfig, num_classes: int, dim: int) -> nn.Module:
    """Proxy-Anchor, with `loss.proxy_margin` and `loss.proxy_alpha`.

    References:
        Kim et al., "Proxy Anchor Loss for Deep Metric Learning", CVPR 2020.
    """
    from pytorch_metric_learning.losses import ProxyAnchorLoss

    return ProxyAnchorLoss(num_classes, dim, margin=cfg.proxy_margin, alpha=cfg.proxy_alpha)


def normalized_softmax_loss(cfg: LossConfig, num_classes: int, dim: int) -> nn.Module:
    """Normalized Softmax, with `loss.softmax_temperature`.

    References:
        Zhai and Wu, "Classification is a Strong Baseline for Deep Metric Learning", BMVC 2019.
    """
    from pytorch_metric_learning.losses import NormalizedSoftmaxLoss

    return NormalizedSoftmaxLoss(num_classes, dim, temperature=cfg.softmax_temperature)


def build_metric_loss(cfg: LossConfig, num_classes: int, dim: int) -> nn.Module | None:
    """The metric loss `loss.metric` names, or None for ``none``."""
    build = METRIC_LOSSES.get(cfg.metric)
    return build(cfg, num_classes, dim) if build is not None else None


class GapanCriterion(nn.Module):
    """The flow, the class priors and every loss term, with their learnable parameters.

    The flow models sqrt(D)-scaled unit embeddings (what retrieval compares, at a unit per
    dimension) plus `flow.input_noise`, in float32 whatever the autocast outside.
    """

    def __init__(self, cfg: ExperimentConfig, num_classes: int, dim: int):
        super().__init__()
        self.cfg = cfg
        uses_flow = cfg.loss.align_weight > 0 or cfg.loss.nll_weight > 0
        self.flow: ClassConditionalFlow | None = (
            build_flow(dim, num_classes, cfg.flow, cfg.prior) if uses_flow else None
        )
        self.metric_loss = build_metric_loss(cfg.loss, num_classes, dim)
        self.scale = math.sqrt(dim)

    def metric_parameters(self) -> list[nn.Parameter]:
        """Proxies of the metric loss (they learn faster, as in Proxy-Anchor)."""
        return list(self.metric_loss.parameters()) if self.metric_loss is not None else []

    def flow_parameters(self) -> list[nn.Parameter]:
        return list(self.flow.parameters()) if self.flow is not None else []

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        classes: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The loss and its parts; `classes` are the batch's sorted distinct labels (computed
        here when not given, at the cost of the host waiting for the device)."""
        cfg = self.cfg
        parts: dict[str, torch.Tensor] = {}
        total = embeddings.new_zeros((), dtype=torch.float32)
        with torch.autocast(embeddings.device.type, enabled=False):
            embeddings = embeddings.float()
            if self.flow is not None:
                points = self.scale * F.normalize(embeddings, dim=-1)
                if self.training and cfg.flow.input_noise > 0:
                    points = points + cfg.flow.input_noise * torch.randn_like(points)
                parts["nll"] = self.flow.nll_per_dim(points, labels)
                total = total + cfg.loss.nll_weight * parts["nll"]
                if cfg.loss.align_weight > 0:
                    if classes is None:
                        classes = torch.unique(labels)
                    with torch.set_grad_enabled(cfg.align.anchor_gradient and self.training):
                        anchors = self.flow.anchors(
                            classes, cfg.anchors.count, cfg.anchors.temperature
                        )
                    parts["align"] = alignment_loss(
                        embeddings, labels, classes, anchors, cfg.align.temperature
                    )
                    total = total + cfg.loss.align_weight * parts["align"]
            if self.metric_loss is not None:
                parts["metric"] = self.metric_loss(embeddings, labels)
                total = total + cfg.loss.metric_weight * parts["metric"]
        return {"loss": total, **parts}
