"""The balanced batch sampler of metric learning: P classes per batch, M images of each."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


class MPerClassBatchSampler(Sampler[list[int]]):
    """Batches of `classes_per_batch` distinct classes with `samples_per_class` images each.

    Classes are visited in a shuffled cycle, so every class appears about equally often; a class
    with fewer than `samples_per_class` images is sampled with replacement, others without. The
    batches depend only on `seed` and the epoch set with `set_epoch`.

    Args:
        labels: The class label of each dataset index.
        classes_per_batch: P, the distinct classes in a batch.
        samples_per_class: M, the images of each class in a batch.
        num_batches: Batches per epoch (the sampler's length).
        seed: Seed of the shuffling.
    """

    def __init__(
        self,
        labels: torch.Tensor | Sequence[int],
        classes_per_batch: int,
        samples_per_class: int,
        num_batches: int,
        seed: int = 0,
    ) -> None:
        super().__init__()
        labels = torch.as_tensor(labels).reshape(-1).tolist()
        members: dict[int, list[int]] = {}
        for index, label in enumerate(labels):
            members.setdefault(label, []).append(index)
        if classes_per_batch < 1 or samples_per_class < 1 or num_batches < 0:
            raise ValueError(
                "classes_per_batch and samples_per_class must be positive, num_batches >= 0"
            )
        if len(members) < classes_per_batch:
            raise ValueError(
                f"classes_per_batch={classes_per_batch} exceeds the {len(members)} classes "
                "in the labels"
            )
        self._members = [np.asarray(members[label]) for label in sorted(members)]
        self.classes_per_batch = classes_per_batch
        self.samples_per_class = samples_per_class
        self.num_batches = num_batches
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle: the next iteration yields the batches of `epoch`."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        generator = np.random.default_rng([self.seed, self.epoch])
        queue: list[int] = []
        for _ in range(self.num_batches):
            classes: list[int] = []
            while len(classes) < self.classes_per_batch:
                if not queue:
                    queue = generator.permutation(len(self._members)).tolist()
                candidate = queue.pop()
                if candidate in classes:  # the cycle wrapped around mid-batch
                    queue.insert(0, candidate)
                    continue
                classes.append(candidate)
            batch: list[int] = []
            for label in classes:
                members = self._members[label]
                replace = len(members) < self.samples_per_class
                batch += generator.choice(members, self.samples_per_class, replace=replace).tolist()
            yield batch
