"""Image transforms from decoded uint8 tensors (3, H, W) to float model input in [0, 1].

Normalisation by the backbone's mean and std is left to the backbone, which knows its own.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2


def square_uint8(side: int) -> v2.Transform:
    """Resize the shorter side to `side` and centre-crop a square; still uint8."""
    return v2.Compose([v2.Resize(side, antialias=True), v2.CenterCrop(side)])


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to float32 in [0, 1], exactly as the transforms' last step does."""
    return v2.functional.to_dtype(images, torch.float32, scale=True)


def eval_transform(image_size: int) -> v2.Transform:
    """Resize the shorter side to `image_size`, centre-crop a square, scale to float in [0, 1]."""
    return v2.Compose([square_uint8(image_size), v2.ToDtype(torch.float32, scale=True)])


def train_transform(image_size: int) -> v2.Transform:
    """A random resized crop of side `image_size`, a random horizontal flip; float in [0, 1]."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )
