"""Images decoded once and kept on the training device; training crops made there per batch.

With ``data.pipeline=workers`` every epoch decodes every JPEG again in DataLoader workers, which
on a fast GPU cannot keep up with the trainer (bench.input_pipeline measures by how much). With
``data.pipeline=device`` each image is decoded once per process: training images as uint8
squares of side ``image_size * 8/7`` (256 for 224, room for the random crop), evaluation images
exactly as `eval_transform` makes them. A training batch is
then an index into device memory, and its random resized crops and flips are one `roi_align`
call over the whole batch.

The stored squares are the centre of each image (shorter side resized to the square's side), so
a random crop never reaches the margins of a wide image; fine-grained data sets centre their
objects, and evaluation crops the same centre.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch.utils.data import DataLoader
from torchvision.ops import roi_align

from gapan.data.imageset import DataError, ImageSet
from gapan.data.transforms import square_uint8

STORED_SCALE = 8 / 7  # the stored side over the training crop's side
CROP_SCALE = (0.08, 1.0)  # torchvision's RandomResizedCrop defaults, as train_transform uses
CROP_RATIO = (3 / 4, 4 / 3)
CROP_TRIES = 10

_decoded: OrderedDict[tuple[str, int], torch.Tensor] = OrderedDict()
_KEEP = 4  # the train, val, test and gallery sets of one data set


def stored_side(image_size: int) -> int:
    return round(image_size * STORED_SCALE)


def decoded(
    images: ImageSet, side: int, device: torch.device, num_workers: int = 0
) -> torch.Tensor:
    """Every image of `images` as a uint8 square (N, 3, side, side) on `device`.

    Decoded once per process (DataLoader workers decode in parallel) and kept for the next
    trial of a reused Tune worker; callers share the tensor and never modify it.
    """
    key = (f"{images.fingerprint}|{device}", side)
    if key in _decoded:
        _decoded.move_to_end(key)
        return _decoded[key]
    needed = len(images) * 3 * side * side
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if needed > free // 2:  # leave the model and its activations at least as much
            raise DataError(
                f"data.pipeline=device would keep {len(images)} images of {side}x{side} px on "
                f"the GPU: {needed / 2**30:.1f} GiB of its {free / 2**30:.1f} GiB free. Use "
                "data.pipeline=workers, a smaller data.image_size, or fewer trials per GPU."
            )
    loader = DataLoader(
        images.with_transform(square_uint8(side)), batch_size=64, num_workers=num_workers
    )
    stored = torch.empty(len(images), 3, side, side, dtype=torch.uint8, device=device)
    start = 0
    for pixels, _ in loader:
        stored[start : start + len(pixels)] = pixels.to(device, non_blocking=True)
        start += len(pixels)
    _decoded[key] = stored
    while len(_decoded) > _KEEP:
        _decoded.popitem(last=False)
    return stored


def crop_boxes(count: int, side: int, generator: torch.Generator) -> torch.Tensor:
    """Boxes (x0, y0, x1, y1) of `count` random resized crops of a side x side image.

    As torchvision's RandomResizedCrop: up to 10 tries of an area share in CROP_SCALE and a
    log-uniform aspect ratio in CROP_RATIO, the first that fits; the whole image when none does.
    Drawn on the CPU from `generator`, so the device never waits and a seed repeats them.
    """
    area = side * side * torch.empty(count, CROP_TRIES).uniform_(*CROP_SCALE, generator=generator)
    log_ratio = torch.empty(count, CROP_TRIES).uniform_(
        math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]), generator=generator
    )
    width = (area * log_ratio.exp()).sqrt().round()
    height = (area / log_ratio.exp()).sqrt().round()
    fits = (width > 0) & (width <= side) & (height > 0) & (height <= side)
    first = fits.float().argmax(dim=1)  # the first try that fits (0 when none does)
    pick = torch.arange(count)
    width, height = width[pick, first], height[pick, first]
    none_fit = ~fits.any(dim=1)
    width[none_fit], height[none_fit] = side, side
    x0 = ((side - width + 1) * torch.rand(count, generator=generator)).floor()
    y0 = ((side - height + 1) * torch.rand(count, generator=generator)).floor()
    return torch.stack([x0, y0, x0 + width, y0 + height], dim=1)


def random_resized_crops(
    images: torch.Tensor, size: int, generator: torch.Generator
) -> torch.Tensor:
    """train_transform for a batch on its device: float (B, 3, size, size) in [0, 1].

    Each image gets its own random resized crop (bilinear, averaging over each output pixel's
    footprint when shrinking) and a horizontal flip with probability 1/2.
    """
    count, _, side, _ = images.shape
    boxes = crop_boxes(count, side, generator)
    flips = torch.rand(count, generator=generator) < 0.5
    indexed = torch.cat([torch.arange(count, dtype=boxes.dtype)[:, None], boxes], dim=1)
    crops = roi_align(
        images.float(),
        indexed.to(images.device, non_blocking=True),
        output_size=size,
        spatial_scale=1.0,
        sampling_ratio=-1,  # adaptive: ceil(box side / size) samples per output pixel and axis
        aligned=True,
    )
    flips = flips.to(images.device, non_blocking=True)[:, None, None, None]
    crops = torch.where(flips, crops.flip(-1), crops)
    return crops.div_(255).clamp_(0, 1)
