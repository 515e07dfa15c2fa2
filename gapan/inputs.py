"""The trainer's input pipelines: what one epoch of training and each evaluation reads.

`Inputs` looks the same to the loop (gapan/train.py) whichever way it is built:
`frozen_inputs` reads backbone features cached once per data set, backbone and image size;
`partial_inputs` reads the cached output of the backbone's frozen lower stages, for several
augmented views of every training image, and trains the stages above;
`finetune_inputs` decodes and augments images in DataLoader workers; `on_device_inputs` decodes
each image once onto the training device and augments batches there (gapan/data/on_device.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from gapan.config import ConfigError, ExperimentConfig
from gapan.data import ImageSet, Splits
from gapan.data.sampler import MPerClassBatchSampler
from gapan.features import cached_features, cached_stage_outputs, read_cached_features
from gapan.weights import backbone_identity, weights_identity

# The backbone (timm) and the image transforms (torchvision) are imported by the input builders
# that use them: they take seconds to import in every new trial worker, and a frozen trial whose
# features are cached needs neither.

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]
# Training batches also carry their classes (sorted distinct labels), found on the CPU: on the
# GPU, torch.unique makes the host wait for the size of its result.
TrainBatches = Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA GPU is visible; use train.device=cpu")
    return torch.device(name)


@dataclass
class Inputs:
    """What the loop reads, the same way whether the backbone is frozen or fine-tuned."""

    in_features: int
    # What the model trains of the backbone: None on cached features, its upper stages on
    # cached stage outputs, all of it on images.
    backbone: torch.nn.Module | None
    train_batches: Callable[[int], TrainBatches]  # epoch -> (inputs, labels, classes) batches
    steps_per_epoch: int  # batches that train_batches yields, each one optimizer step
    eval_batches: dict[str, Callable[[], Batches]]  # split name -> its batches, in order
    eval_labels: dict[str, torch.Tensor]


def _batch_sampler(cfg: ExperimentConfig, labels: torch.Tensor) -> MPerClassBatchSampler:
    batch_size = cfg.data.classes_per_batch * cfg.data.samples_per_class
    steps = cfg.train.steps_per_epoch or max(1, len(labels) // batch_size)
    return MPerClassBatchSampler(
        labels, cfg.data.classes_per_batch, cfg.data.samples_per_class, steps, cfg.train.seed
    )


def _epoch_generator(cfg: ExperimentConfig, epoch: int) -> torch.Generator:
    """The random draws of one epoch's augmentation (crops, cached views), from (seed, epoch):
    a resumed run draws what it would have drawn."""
    return torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + epoch)


def _labels_and_classes(
    labels: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's labels and its classes (sorted distinct labels, found here on the CPU)."""
    classes = torch.unique(labels)
    return labels.to(device, non_blocking=True), classes.to(device, non_blocking=True)


def _eval_sets(splits: Splits) -> dict:
    sets = {"val": splits.val, "test": splits.test}
    if splits.test_gallery is not None:
        sets["gallery"] = splits.test_gallery
    return sets


def frozen_features(
    cfg: ExperimentConfig, splits: Splits, device: torch.device
) -> dict[str, torch.Tensor]:
    """Backbone features of every split (CPU tensors by name), from the cache or computed into it.

    When the weights' identity is known without loading them (a weight package or file) and
    every split is cached, the backbone is never built.
    """
    sets = {"train": splits.train, **_eval_sets(splits)}
    weights = weights_identity(cfg.model.pretrained)
    if weights is not None:
        identity = backbone_identity(cfg.model.backbone, weights)
        features = read_cached_features(identity, sets, cfg.data.image_size)
        if features is not None:
            return features
    from gapan.backbone import build_backbone

    backbone = build_backbone(cfg.model)
    return cached_features(backbone, sets, cfg.data.image_size, cfg.train.eval_batch_size, device)


def frozen_inputs(cfg: ExperimentConfig, splits: Splits, device: torch.device) -> Inputs:
    """Backbone features computed once per data set, backbone and image size, then reused."""
    features = frozen_features(cfg, splits, device)
    features = {name: value.to(device) for name, value in features.items()}
    sampler = _batch_sampler(cfg, splits.train.labels)

    def train_batches(epoch: int) -> TrainBatches:
        sampler.set_epoch(epoch)
        for batch in sampler:
            labels = splits.train.labels[batch]
            index = torch.as_tensor(batch).to(device, non_blocking=True)
            yield features["train"][index], *_labels_and_classes(labels, device)

    def eval_batches(name: str) -> Callable[[], Batches]:
        size = cfg.train.eval_batch_size
        return lambda: ((chunk, None) for chunk in features[name].split(size))

    sets = _eval_sets(splits)
    return Inputs(
        in_features=features["train"].shape[1],
        backbone=None,
        train_batches=train_batches,
        steps_per_epoch=len(sampler),
        eval_batches={name: eval_batches(name) for name in sets},
        eval_labels={name: images.labels for name, images in sets.items()},
    )


def partial_inputs(cfg: ExperimentConfig, splits: Splits, device: torch.device) -> Inputs:
    """The backbone's lower stages run once, cached; its last `model.trainable_blocks` train.

    Every training image has `data.cached_views` augmented views cached; each epoch shows every
    image in a batch as one of them, drawn from (seed, epoch) so that a resumed run draws the
    same. Evaluation reads the lower stages' output of the evaluation transform.
    """
    backbone, frozen, trained, identity = split_for_training(cfg)
    train_maps, maps = cached_stage_outputs(
        frozen,
        identity,
        splits.train,
        _eval_sets(splits),
        cfg.data.image_size,
        cfg.data.cached_views,
        cfg.train.eval_batch_size,
        device,
    )
    sampler = _batch_sampler(cfg, splits.train.labels)

    def train_batches(epoch: int) -> TrainBatches:
        sampler.set_epoch(epoch)
        generator = _epoch_generator(cfg, epoch)
        for batch in sampler:
            index = torch.as_tensor(batch)
            views = torch.randint(train_maps.shape[1], (len(index),), generator=generator)
            inputs = train_maps[index, views].to(device, torch.float32, non_blocking=True)
            yield inputs, *_labels_and_classes(splits.train.labels[index], device)

    def eval_batches(name: str) -> Callable[[], Batches]:
        size = cfg.train.eval_batch_size
        return lambda: ((chunk.to(device, torch.float32), None) for chunk in maps[name].split(size))

    return Inputs(
        in_features=backbone.num_features,
        backbone=trained.to(device),
        train_batches=train_batches,
        steps_per_epoch=len(sampler),
        eval_batches={name: eval_batches(name) for name in maps},
        eval_labels={name: images.labels for name, images in _eval_sets(splits).items()},
    )


def split_for_training(
    cfg: ExperimentConfig,
) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module, str]:
    """The backbone, its frozen and trained parts (`gapan.backbone.split_backbone`), and the
    identity of the frozen part: backbone, weights and cut, the key of its cached output."""
    from gapan.backbone import build_backbone, cut_layer, split_backbone

    backbone = build_backbone(cfg.model)
    stages = cfg.model.trainable_blocks
    frozen, trained = split_backbone(backbone, stages, cfg.data.image_size)
    return (
        backbone,
        frozen,
        trained,
        f"{backbone.identity}|frozen-through-{cut_layer(backbone.model, stages)}",
    )


def _image_inputs(
    backbone: torch.nn.Module,
    splits: Splits,
    sampler: MPerClassBatchSampler,
    train_batches: Callable[[int], TrainBatches],
    eval_batches: Callable[[ImageSet], Callable[[], Batches]],
) -> Inputs:
    """Inputs of a fine-tuned backbone: images in, whichever way they are decoded."""
    sets = _eval_sets(splits)
    return Inputs(
        in_features=backbone.num_features,
        backbone=backbone,
        train_batches=train_batches,
        steps_per_epoch=len(sampler),
        eval_batches={name: eval_batches(images) for name, images in sets.items()},
        eval_labels={name: images.labels for name, images in sets.items()},
    )


def finetune_inputs(cfg: ExperimentConfig, splits: Splits, device: torch.device) -> Inputs:
    """Decoded and augmented images, end to end through the backbone."""
    from gapan.backbone import build_backbone
    from gapan.data.transforms import eval_transform, train_transform

    backbone = build_backbone(cfg.model)
    sampler = _batch_sampler(cfg, splits.train.labels)
    loader_args = {
        "num_workers": cfg.data.num_workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": cfg.data.num_workers > 0,
    }
    train_loader = DataLoader(
        splits.train.with_transform(train_transform(cfg.data.image_size)),
        batch_sampler=sampler,
        **loader_args,
    )

    def train_batches(epoch: int) -> TrainBatches:
        sampler.set_epoch(epoch)
        for images, labels in train_loader:
            yield images.to(device, non_blocking=True), *_labels_and_classes(labels, device)

    def eval_batches(images: ImageSet) -> Callable[[], Batches]:
        loader = DataLoader(
            images.with_transform(eval_transform(cfg.data.image_size)),
            batch_size=cfg.train.eval_batch_size,
            **loader_args,
        )
        return lambda: ((x.to(device, non_blocking=True), y) for x, y in loader)

    return _image_inputs(backbone, splits, sampler, train_batches, eval_batches)


def on_device_inputs(cfg: ExperimentConfig, splits: Splits, device: torch.device) -> Inputs:
    """Images decoded once onto the device; each batch cropped and flipped there."""
    from gapan.backbone import build_backbone
    from gapan.data import on_device
    from gapan.data.transforms import to_float

    backbone = build_backbone(cfg.model)
    size, workers = cfg.data.image_size, cfg.data.num_workers
    train_images = on_device.decoded(splits.train, on_device.stored_side(size), device, workers)
    sampler = _batch_sampler(cfg, splits.train.labels)

    def train_batches(epoch: int) -> TrainBatches:
        sampler.set_epoch(epoch)
        generator = _epoch_generator(cfg, epoch)
        for batch in sampler:
            index = torch.as_tensor(batch)
            pixels = train_images[index.to(device, non_blocking=True)]
            crops = on_device.random_resized_crops(pixels, size, generator)
            yield crops, *_labels_and_classes(splits.train.labels[index], device)

    def eval_batches(images: ImageSet) -> Callable[[], Batches]:
        stored = on_device.decoded(images, size, device, workers)
        chunks = cfg.train.eval_batch_size
        # What eval_transform makes from the same files: its uint8 square, scaled to float.
        return lambda: ((to_float(chunk), None) for chunk in stored.split(chunks))

    return _image_inputs(backbone, splits, sampler, train_batches, eval_batches)
