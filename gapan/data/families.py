"""Keeping a benchmark honest: near-copy removal and family-disjoint splits.

A retrieval benchmark on unseen classes says little when a test image has a near-copy in its own
class (an animation frame a few pixels from the next is found by any embedding), or when an
"unseen" class is a recolour or an advancement of a seen one. The tools here work on any labelled
image set:

- `thumbnail` and `near_pairs` find near-copies by the mean absolute difference of small
  thumbnails;
- `drop_near_copies` keeps the first image of every group of near-copies, within and across classes;
- `families` joins related classes into connected components;
- `split_families` and `validation_cut` put every family wholly on one side of each split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image


def thumbnail(image: Image.Image, size: int) -> np.ndarray:
    """An image as a ``size`` x ``size`` bilinear RGB thumbnail, flattened, values in [0, 1]."""
    small = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(small, dtype=np.float32).reshape(-1) / 255.0


def near_pairs(thumbnails: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Every pair ``i < j`` whose thumbnails differ by less than `threshold` on average.

    The distance is the mean absolute difference per value. Two lower bounds of the L1 distance
    leave only a few candidate pairs for the exact distance: the squared Euclidean distance (for
    values in [0, 1] each squared difference is at most the absolute one), which one matrix product
    gives for all pairs, then the L1 distance between sums over 4 x 4 blocks of each channel.

    Args:
        thumbnails: (N, D) array from `thumbnail`, values in [0, 1].
        threshold: Mean absolute difference per value below which two images are near-copies.

    Returns:
        ``(i, j, distance)`` triples, sorted.
    """
    points = np.asarray(thumbnails, dtype=np.float32)
    count, dimensions = points.shape
    limit = threshold * dimensions
    side = round((dimensions / 3) ** 0.5)
    if 3 * side * side == dimensions and side % 4 == 0:
        blocks = points.reshape(count, side // 4, 4, side // 4, 4, 3).sum(axis=(2, 4))
        blocks = blocks.reshape(count, -1)
    else:
        blocks = points
    wide = points.astype(np.float64)
    squared = (wide**2).sum(axis=1)
    pairs = []
    for start in range(0, count, 512):
        squared_distance = (
            squared[start : start + 512, None]
            + squared[None, :]
            - 2 * wide[start : start + 512] @ wide.T
        )
        rows, columns = np.nonzero(squared_distance < limit + 1e-6)
        rows += start
        keep = rows < columns
        rows, columns = rows[keep], columns[keep]
        keep = np.abs(blocks[rows] - blocks[columns]).sum(axis=1) < limit + 1e-3
        rows, columns = rows[keep], columns[keep]
        distances = np.abs(points[rows] - points[columns]).mean(axis=1)
        close = distances < threshold
        pairs += zip(
            rows[close].tolist(), columns[close].tolist(), distances[close].tolist(), strict=True
        )
    return sorted(pairs)


def drop_near_copies(
    count: int, pairs: Iterable[tuple[int, int, float]], threshold: float
) -> list[int]:
    """The images to keep: each one unless it is a near-copy of an image kept before it.

    Within a class a near-copy is a trivial match; across classes it is a contradicting label.
    Either way only the first of a group is kept (images in their given order).

    Args:
        count: How many images there are, in their order.
        pairs: `near_pairs` at a threshold of at least `threshold`.
        threshold: Pairs closer than this are near-copies.

    Returns:
        The positions of the kept images, ascending.
    """
    earlier: dict[int, list[int]] = {}
    for i, j, distance in pairs:
        if distance < threshold:
            earlier.setdefault(j, []).append(i)
    kept: set[int] = set()
    for index in range(count):
        if not any(other in kept for other in earlier.get(index, ())):
            kept.add(index)
    return sorted(kept)


def families(classes: Iterable[str], links: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Each class's family: the connected component of `links` it belongs to.

    Links may pass through names that are not in `classes` (a unit left out of the data set still
    relates the units on either side of it). A family is named by its alphabetically first class.

    >>> families(["a", "b", "c", "d"], [("b", "a"), ("c", "x"), ("x", "d")])
    {'a': 'a', 'b': 'a', 'c': 'c', 'd': 'c'}
    """
    classes = list(classes)
    parent = {name: name for name in classes}

    def root(name: str) -> str:
        parent.setdefault(name, name)
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for first, second in links:
        a, b = root(first), root(second)
        if a != b:
            parent[max(a, b)] = min(a, b)
    members: dict[str, list[str]] = {}
    for name in classes:
        members.setdefault(root(name), []).append(name)
    return {name: min(group) for group in members.values() for name in group}


def _family_order(family_of: Mapping[str, str], seed: int = 0) -> list[list[str]]:
    """Families as sorted member lists, ordered by the SHA-1 of the family's name (salted by
    `seed` when it is not 0): a fixed order, the same on every machine and Python version."""
    groups: dict[str, list[str]] = {}
    for name, family in family_of.items():
        groups.setdefault(family, []).append(name)
    salt = f"{seed}:" if seed else ""
    order = sorted(groups, key=lambda family: hashlib.sha1(f"{salt}{family}".encode()).hexdigest())
    return [sorted(groups[family]) for family in order]


def split_families(family_of: Mapping[str, str], seed: int = 0) -> tuple[list[str], list[str]]:
    """Seen and unseen classes with every family wholly on one side.

    Families are taken in the order of the SHA-1 of their names (a fixed order that mixes
    factions), and each goes to the unseen side if it fits there within half of the classes
    (rounded up), else to the seen side: the sides stay balanced even when one family is large.
    Each side lists its classes family by family, so a validation split cut at a family boundary
    (`validation_cut`) is family-disjoint from training too. Another `seed` salts the hash: another
    assignment of the families to the two sides, drawn the same way.
    """
    unseen: list[str] = []
    seen: list[str] = []
    for members in _family_order(family_of, seed):
        fits = 2 * (len(unseen) + len(members)) <= len(family_of) + 1
        (unseen if fits else seen).extend(members)
    return seen, unseen


def validation_cut(names: Sequence[str], family_of: Mapping[str, str], wanted: int) -> int:
    """Where to cut `names` into training (before) and validation (after) classes.

    The cut falls on a family boundary, the one that holds out the number of validation classes
    closest to `wanted` while leaving at least one class on each side (ties: more validation),
    and two validation classes where a boundary allows. Without families or a boundary, or with
    `wanted` 0, the cut is ``len(names) - wanted``.
    """
    target = len(names) - wanted
    if wanted == 0 or not family_of:
        return target
    boundaries = [
        position
        for position in range(1, len(names))
        if family_of.get(names[position], names[position])
        != family_of.get(names[position - 1], names[position - 1])
    ]
    # Retrieval needs at least two validation classes: prefer the cuts that leave them.
    boundaries = [position for position in boundaries if len(names) - position >= 2] or boundaries
    if not boundaries:
        return target
    return min(boundaries, key=lambda position: (abs(position - target), position))
