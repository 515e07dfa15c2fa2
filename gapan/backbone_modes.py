"""How much of the backbone trains: one class per ``model.backbone_mode``.

Each says what its mode changes at every step that depends on it: what the trainer reads, the
cache a study fills before its first trial, how many of the backbone's parameters train, and how
an exported model splits its backbone. `gapan.config.BACKBONE_MODES` names them, so the trainer,
the runner, the export and `gapan.embed` ask the mode and never test its name.

The backbone (timm) is imported by the methods that build it: a frozen trial whose features are
cached needs none.
"""

from __future__ import annotations

import torch
from torch import nn

from gapan.config import ExperimentConfig
from gapan.data import Splits
from gapan.inputs import (
    Inputs,
    finetune_inputs,
    frozen_features,
    frozen_inputs,
    on_device_inputs,
    partial_inputs,
    resolve_device,
)


class BackboneMode:
    """What a backbone mode does; the subclasses below are the modes."""

    # Some of the backbone trains, so its shape must be known to count what a trial trains.
    trains_backbone = False
    # A trial's kept weights hold the whole backbone: an export needs no backbone file.
    trains_whole_backbone = False
    # The backbone is cut before its last `model.trainable_blocks` stages; the lower stages'
    # output is cached as float16, which an exported model repeats.
    cut = False

    def inputs(self, cfg: ExperimentConfig, splits: Splits, device: torch.device) -> Inputs:
        """What the trainer reads (gapan/inputs.py)."""
        raise NotImplementedError

    def fill_cache(self, cfg: ExperimentConfig, splits: Splits) -> int | None:
        """Before a study's first trial: the cache its trials read, built once.

        Returns:
            The backbone's feature size, where the cache tells it.
        """
        return None

    def trained_parameters(self, model: nn.Module, trainable_blocks: int) -> int:
        """Parameters of the timm `model` that a trial trains (a model on the meta device will
        do: only shapes are read)."""
        return 0

    def parts(
        self, backbone: nn.Module, trainable_blocks: int | None, image_size: int
    ) -> tuple[nn.Module | None, nn.Module | None]:
        """The backbone as (what runs before the trained model, what the trained model holds)."""
        raise NotImplementedError


class Frozen(BackboneMode):
    """Backbone features computed once per data set, backbone and image size, then cached."""

    def inputs(self, cfg: ExperimentConfig, splits: Splits, device: torch.device) -> Inputs:
        return frozen_inputs(cfg, splits, device)

    def fill_cache(self, cfg: ExperimentConfig, splits: Splits) -> int | None:
        features = frozen_features(cfg, splits, resolve_device(cfg.train.device))
        return features["train"].shape[1]

    def parts(
        self, backbone: nn.Module, trainable_blocks: int | None, image_size: int
    ) -> tuple[nn.Module | None, nn.Module | None]:
        return backbone, None


class Partial(BackboneMode):
    """The lower stages frozen, their output cached for augmented views of every image; the last
    `model.trainable_blocks` stages train."""

    trains_backbone = True
    cut = True

    def inputs(self, cfg: ExperimentConfig, splits: Splits, device: torch.device) -> Inputs:
        return partial_inputs(cfg, splits, device)

    def fill_cache(self, cfg: ExperimentConfig, splits: Splits) -> int | None:
        # Seeded as a trial seeds its backbone: random weights (model.pretrained=none) differ by
        # seed, and so do their cache entries; pretrained ones share one.
        torch.manual_seed(cfg.train.seed)
        partial_inputs(cfg, splits, resolve_device(cfg.train.device))  # fills the cache trials read
        return None

    def trained_parameters(self, model: nn.Module, trainable_blocks: int) -> int:
        from gapan.backbone import trained_stage_parameters

        return trained_stage_parameters(model, trainable_blocks)

    def parts(
        self, backbone: nn.Module, trainable_blocks: int | None, image_size: int
    ) -> tuple[nn.Module | None, nn.Module | None]:
        from gapan.backbone import split_backbone

        return split_backbone(backbone, trainable_blocks, image_size)


class Finetune(BackboneMode):
    """The whole backbone trains, end to end on images (decoded as `data.pipeline` says)."""

    trains_backbone = True
    trains_whole_backbone = True

    def inputs(self, cfg: ExperimentConfig, splits: Splits, device: torch.device) -> Inputs:
        if cfg.data.pipeline == "device":
            return on_device_inputs(cfg, splits, device)
        return finetune_inputs(cfg, splits, device)

    def trained_parameters(self, model: nn.Module, trainable_blocks: int) -> int:
        return sum(parameter.numel() for parameter in model.parameters())

    def parts(
        self, backbone: nn.Module, trainable_blocks: int | None, image_size: int
    ) -> tuple[nn.Module | None, nn.Module | None]:
        return None, backbone


FROZEN = Frozen()
PARTIAL = Partial()
FINETUNE = Finetune()
