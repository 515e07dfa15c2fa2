"""The data contract every loader returns: labelled image files split into class-disjoint sets."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile
from torch.utils.data import Dataset


class DataError(ValueError):
    """A data set folder, file or image that cannot be used; the message says what to do."""


class BadImageError(DataError):
    """An image file that cannot be decoded."""


@dataclass(frozen=True, eq=False)
class ImageSet(Dataset):
    """Image files with integer class labels (0..C-1 within this set) and their class names.

    Images are decoded lazily to uint8 RGB tensors of shape (3, H, W); transparent images are
    composited on white. `transform` (applied after decoding) turns them into model input.
    """

    paths: tuple[Path, ...]
    labels: torch.Tensor  # int64, shape (N,)
    class_names: tuple[str, ...]
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.labels):
            raise ValueError("paths and labels differ in length")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = read_image(self.paths[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def fingerprint(self) -> str:
        """A short identity of the files, their contents and labels (a feature-cache key).

        Each file enters by path, size and modification time, so an image replaced under the
        same name (which changes its time) gives another fingerprint, and features cached from
        the old image are not reused. A missing file enters as such; reading it fails later,
        naming it. Computed anew on every call: one `stat` per image.
        """
        digest = hashlib.sha1()
        for path, label in zip(self.paths, self.labels.tolist(), strict=True):
            try:
                stat = os.stat(path)
                state = f"{stat.st_size}\0{stat.st_mtime_ns}"
            except OSError:
                state = "missing"
            digest.update(f"{path}\0{label}\0{state}\n".encode())
        return digest.hexdigest()[:16]

    def with_transform(self, transform: Callable[[torch.Tensor], torch.Tensor] | None) -> ImageSet:
        return dataclasses.replace(self, transform=transform)

    def subset(self, keep: Sequence[int]) -> ImageSet:
        """The images at positions `keep`, with the same class names and labels."""
        index = torch.as_tensor(list(keep), dtype=torch.long)
        return dataclasses.replace(
            self, paths=tuple(self.paths[i] for i in index.tolist()), labels=self.labels[index]
        )


def make_imageset(items: Sequence[tuple[Path, str]], class_order: Sequence[str]) -> ImageSet:
    """Build a set from ``(path, class name)`` pairs; labels follow `class_order`."""
    label_of = {name: i for i, name in enumerate(class_order)}
    paths = tuple(Path(path) for path, _ in items)
    labels = torch.tensor([label_of[name] for _, name in items], dtype=torch.long)
    return ImageSet(paths=paths, labels=labels, class_names=tuple(class_order))


@dataclass(frozen=True)
class Splits:
    """Class-disjoint splits of one data set.

    `train` and `val` hold disjoint subsets of the seen classes (val tunes hyperparameters);
    `test` holds the unseen classes. Where a benchmark defines a separate gallery (In-Shop), `test`
    is the query set and `test_gallery` the gallery; otherwise retrieval is leave-one-out in `test`.
    """

    name: str
    train: ImageSet
    val: ImageSet
    test: ImageSet
    test_gallery: ImageSet | None = None
    # Recall@K cut-offs this benchmark reports.
    recall_ks: tuple[int, ...] = (1, 2, 4, 8)


def read_image(path: Path) -> torch.Tensor:
    """Decode an image file to a uint8 RGB tensor (3, H, W), transparency composited on white.

    Raises:
        BadImageError: naming the file, when it is missing, truncated or not an image.
    """
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as image:
            if image.has_transparency_data:
                rgba = image.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                rgb = Image.alpha_composite(white, rgba).convert("RGB")
            else:
                rgb = image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImageError(
            f"cannot decode image {path}: {error}. Replace or delete the file, or set "
            "data.bad_images=skip to leave unreadable images out."
        ) from None
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)
