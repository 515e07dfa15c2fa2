"""The image backbone: a global-pooled timm model that normalises its own input."""

from __future__ import annotations

import difflib

import timm
import timm.models
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from gapan.config import ConfigError, ModelConfig
from gapan.weights import WeightsInfo, backbone_identity, load_pretrained


class Backbone(nn.Module):
    """A timm model without its classifier: images in [0, 1] to pooled features.

    Attributes:
        name: The timm model name.
        num_features: Size of the pooled feature vector.
        weights: What `gapan.weights.load_pretrained` loaded.
        identity: Backbone name and weights identity (a feature-cache key).
        mean, std: Normalisation buffers of shape (1, 3, 1, 1), from the weights or timm's
            pretrained config.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, name: str, pretrained: str = "none"):
        super().__init__()
        check_backbone_name(name)
        self.name = name
        self.model = _create(name)
        self.weights: WeightsInfo = load_pretrained(pretrained, name, self.model)
        config = self.model.pretrained_cfg
        mean = self.weights.mean or config.get("mean") or IMAGENET_DEFAULT_MEAN
        std = self.weights.std or config.get("std") or IMAGENET_DEFAULT_STD
        # Not persistent: they follow from the config, and the state dict stays timm's.
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.num_features: int = self.model.num_features
        self.identity = backbone_identity(name, self.weights.identity)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, num_features) of float images (B, 3, H, W) in [0, 1]."""
        return self.model((images - self.mean) / self.std)


def build_backbone(cfg: ModelConfig) -> Backbone:
    """The backbone named by `cfg.backbone` with the weights named by `cfg.pretrained`.

    Raises:
        ConfigError: for an unknown timm name or weights that cannot be loaded.
    """
    return Backbone(cfg.backbone, cfg.pretrained)


def check_backbone_name(name: str) -> None:
    """Raise a ConfigError, with close matches, when timm has no model called `name`."""
    if timm.is_model(name):
        return
    known = timm.list_models()
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    family = name.split("_")[0].rstrip("0123456789") or name
    if not close:
        close = timm.list_models(f"*{family}*")[:5]
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise ConfigError(
        f"model.backbone={name!r} is not a timm model.{hint} List names with "
        f"timm.list_models('*{family}*')."
    )


def _create(name: str) -> nn.Module:
    """Create the model headless, letting fixed-size models (ViTs) take any image size."""
    architecture = name.partition(".")[0]
    config = timm.models.get_pretrained_cfg(architecture)
    if config is not None and config.fixed_input_size:
        try:
            return timm.create_model(name, pretrained=False, num_classes=0, dynamic_img_size=True)
        except TypeError:  # a fixed-size model without position-embedding interpolation
            pass
    return timm.create_model(name, pretrained=False, num_classes=0)
