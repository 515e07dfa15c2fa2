"""The retrieval model: a backbone's pooled features, then a linear embedding head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingModel(nn.Module):
    """Images (or cached backbone features) to embeddings.

    In `frozen` mode the backbone ran once, ahead of training (gapan.features), and `backbone` is
    None: the model takes the cached features. In `partial` mode `backbone` is the backbone's
    upper stages and the model takes the cached output of its lower ones. In `finetune` mode it
    takes images in [0, 1].
    Retrieval uses the L2-normalised output (`embed`).
    """

    def __init__(self, backbone: nn.Module | None, in_features: int, embed_dim: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(in_features, embed_dim)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        features = self.backbone(inputs) if self.backbone is not None else inputs
        return self.head(features)

    @torch.inference_mode()
    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        return F.normalize(self(inputs).float(), dim=-1)
