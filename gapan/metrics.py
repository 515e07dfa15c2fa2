"""Exact retrieval metrics: Recall@K, MAP@R, R-Precision (cosine similarity) and NMI.

All metrics share one exact neighbour search: embeddings are L2-normalised once, and queries are
compared with the whole gallery by a matrix product in float32, a chunk of queries at a time, so
memory stays bounded and the work stays on whatever device the embeddings are on (CPU or CUDA).
There is no approximate search and no Python loop over queries.

Two modes:

- Leave-one-out (``gallery=None``): every item is a query against all other items of the same set,
  as for CUB-200-2011, Cars196 and Stanford Online Products. An item never retrieves itself; it is
  excluded by index, so an exact duplicate of it still counts as a neighbour.
- Query / gallery: queries are searched in a separate gallery, as for In-Shop.

Queries with no relevant item (R = 0: the only item of their class in leave-one-out, or a class
absent from the gallery) can never score, so every metric here averages over the other queries,
as pytorch-metric-learning's ``AccuracyCalculator`` does.

References:
    Musgrave, Belongie and Lim, "A Metric Learning Reality Check", ECCV 2020 (MAP@R, R-Precision).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

# One chunk's similarity block holds at most this many float32 values (256 MiB).
_BLOCK_ELEMENTS = 2**26

# k-means runs for NMI: one seeded run, as pytorch-metric-learning's faiss k-means does; each
# restart costs a whole k-means and barely moves NMI (bench/README.md has the figure).
_KMEANS_RESTARTS = 1


def nearest_neighbours(
    query: torch.Tensor,
    gallery: torch.Tensor | None = None,
    *,
    k: int,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k most cosine-similar gallery items of every query, most similar first.

    Args:
        query: Query embeddings, shape (N, D), any float dtype; half precision is computed in
            float32.
        gallery: Gallery embeddings, shape (M, D). None means leave-one-out retrieval within
            `query`: each item is searched among all the others, never itself.
        k: Neighbours per query; at most M, or N - 1 in leave-one-out.
        chunk_size: Queries per matrix product. None chooses it from the gallery size so that one
            chunk's similarity block stays near 256 MiB.

    Returns:
        Cosine similarities (float32) and gallery indices (int64) of the neighbours, each of shape
        (N, k), on the device of `query`.

    Raises:
        ValueError: On shapes that do not match, a k out of range or non-finite embeddings.

    Example:
        Three points on the unit circle at 0, 30 and 90 degrees:

        >>> points = torch.tensor([[1.0, 0.0], [0.866, 0.5], [0.0, 1.0]])
        >>> similarities, indices = nearest_neighbours(points, k=2)
        >>> indices.tolist()
        [[1, 2], [0, 2], [1, 0]]
        >>> [round(value, 3) for value in similarities[0].tolist()]
        [0.866, 0.0]
    """
    with torch.no_grad():
        parts = list(_neighbour_chunks(query, gallery, k, chunk_size))
    similarities = torch.cat([part[1] for part in parts])
    indices = torch.cat([part[2] for part in parts])
    return similarities, indices


def relevant_counts(
    query_labels: torch.Tensor, gallery_labels: torch.Tensor | None = None
) -> torch.Tensor:
    """R for every query: how many OTHER gallery items share its label.

    Args:
        query_labels: Integer class labels of the queries, shape (N,).
        gallery_labels: Integer class labels of the gallery, shape (M,). None means
            leave-one-out within the queries, where the query itself is not counted.

    Returns:
        int64 counts, shape (N,), on the device of `query_labels`.

    Example:
        >>> relevant_counts(torch.tensor([0, 0, 0, 1, 2]))
        tensor([2, 2, 2, 0, 0])
        >>> relevant_counts(torch.tensor([0, 3]), torch.tensor([0, 0, 1]))
        tensor([2, 0])
    """
    query_labels = _check_labels(query_labels, "query_labels")
    leave_one_out = gallery_labels is None
    if leave_one_out:
        gallery_labels = query_labels
    else:
        gallery_labels = _check_labels(gallery_labels, "gallery_labels").to(query_labels.device)
    classes, class_sizes = torch.unique(gallery_labels, return_counts=True)
    position = torch.searchsorted(classes, query_labels).clamp(max=len(classes) - 1)
    counts = torch.where(classes[position] == query_labels, class_sizes[position], 0)
    return counts - 1 if leave_one_out else counts


def recall_at_k(
    neighbour_labels: torch.Tensor,
    query_labels: torch.Tensor,
    relevant: torch.Tensor,
    k: int,
) -> float:
    """Recall@K as metric learning uses it: the share of queries with a hit among their top K.

    This is not the information-retrieval recall (hits / R): a query scores 1 if at least one of
    its K nearest neighbours has its label, so Recall@1 equals Precision@1.

    Args:
        neighbour_labels: Labels of each query's neighbours, most similar first, shape (N, k').
            With k' < K the whole list is used.
        query_labels: Labels of the queries, shape (N,).
        relevant: R of every query (`relevant_counts`); queries with R = 0 are left out.
        k: K, the number of neighbours looked at.

    Returns:
        The mean over queries with R > 0, in [0, 1].

    Example:
        Query 0 (label 0) finds its class at rank 2, query 1 (label 1) at rank 1:

        >>> neighbours = torch.tensor([[1, 0], [1, 0]])
        >>> labels, relevant = torch.tensor([0, 1]), torch.tensor([1, 1])
        >>> [recall_at_k(neighbours, labels, relevant, k) for k in (1, 2)]
        [0.5, 1.0]
    """
    matches, relevant = _matches(neighbour_labels, query_labels, relevant)
    return _mean_over_scoring(_recall_per_query(matches, k), relevant)


def map_at_r(
    neighbour_labels: torch.Tensor, query_labels: torch.Tensor, relevant: torch.Tensor
) -> float:
    """Mean Average Precision at R (MAP@R).

    For a query with R relevant items, AP@R = (1 / R) * sum over ranks i <= R of P(i) * rel(i),
    where P(i) is the precision of the first i neighbours and rel(i) is 1 if neighbour i has the
    query's label. Hits after rank R do not count, unlike plain average precision.

    Args:
        neighbour_labels: Labels of each query's neighbours, most similar first, shape (N, k');
            k' must be at least R of every query, else the metric would silently be wrong.
        query_labels: Labels of the queries, shape (N,).
        relevant: R of every query (`relevant_counts`); queries with R = 0 are left out.

    Returns:
        The mean AP@R over queries with R > 0, in [0, 1].

    Raises:
        ValueError: If the neighbour list is shorter than some query's R.

    References:
        Musgrave, Belongie and Lim, "A Metric Learning Reality Check", ECCV 2020.

    Example:
        R = 3 and hits at ranks 1 and 3: AP@R = (1/1 + 2/3) / 3 = 5/9.

        >>> round(map_at_r(torch.tensor([[0, 1, 0]]), torch.tensor([0]), torch.tensor([3])), 4)
        0.5556

        R = 2 and the same list: rank 3 is beyond R, so AP@R = (1/1) / 2.

        >>> map_at_r(torch.tensor([[0, 1, 0]]), torch.tensor([0]), torch.tensor([2]))
        0.5
    """
    matches, relevant = _matches(neighbour_labels, query_labels, relevant)
    _check_covers_r(matches, relevant)
    return _mean_over_scoring(_average_precision_at_r(matches, relevant), relevant)


def r_precision(
    neighbour_labels: torch.Tensor, query_labels: torch.Tensor, relevant: torch.Tensor
) -> float:
    """R-Precision: the share of a query's first R neighbours that have its label.

    Args:
        neighbour_labels: Labels of each query's neighbours, most similar first, shape (N, k');
            k' must be at least R of every query.
        query_labels: Labels of the queries, shape (N,).
        relevant: R of every query (`relevant_counts`); queries with R = 0 are left out.

    Returns:
        The mean over queries with R > 0, in [0, 1].

    Raises:
        ValueError: If the neighbour list is shorter than some query's R.

    References:
        Musgrave, Belongie and Lim, "A Metric Learning Reality Check", ECCV 2020.

    Example:
        R = 2 with one hit among the first two neighbours; the hit at rank 3 does not count:

        >>> r_precision(torch.tensor([[0, 1, 0]]), torch.tensor([0]), torch.tensor([2]))
        0.5
    """
    matches, relevant = _matches(neighbour_labels, query_labels, relevant)
    _check_covers_r(matches, relevant)
    return _mean_over_scoring(_r_precision_per_query(matches, relevant), relevant)


def nmi(embeddings: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> float:
    """Normalised mutual information between the labels and a k-means clustering.

    k-means (scikit-learn, k = number of classes, one seeded run, on the CPU)
    clusters the L2-normalised embeddings, as the cosine-similarity retrieval sees them.

    Args:
        embeddings: Embeddings, shape (N, D).
        labels: Integer class labels, shape (N,).
        seed: Seed of the k-means initialisation.

    Returns:
        NMI in [0, 1]; 1 when the clusters are exactly the classes.

    Example:
        >>> points = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> nmi(points, torch.tensor([0, 0, 1, 1]))
        1.0
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    embeddings = _check_embeddings(embeddings, "embeddings")
    labels = _check_labels(labels, "labels")
    _check_same_length(embeddings, labels, "embeddings", "labels")
    points = F.normalize(embeddings.detach().float(), dim=1).cpu().numpy()
    classes = labels.cpu().numpy()
    num_classes = len(set(classes.tolist()))
    clusters = KMeans(n_clusters=num_classes, n_init=_KMEANS_RESTARTS, random_state=seed)
    predicted = clusters.fit_predict(points)
    return float(normalized_mutual_info_score(classes, predicted))


def retrieval_metrics(
    query: torch.Tensor,
    query_labels: torch.Tensor,
    gallery: torch.Tensor | None = None,
    gallery_labels: torch.Tensor | None = None,
    recall_ks: Sequence[int] = (1, 2, 4, 8),
    with_nmi: bool = True,
    *,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Recall@K, MAP@R, R-Precision and (optionally) NMI from one exact neighbour search.

    The means over queries of `query_scores` (queries with R = 0 left out), and NMI.

    Args:
        query: Query embeddings, shape (N, D).
        query_labels: Integer class labels of the queries, shape (N,).
        gallery: Gallery embeddings, shape (M, D); None means leave-one-out within `query`.
        gallery_labels: Labels of the gallery, shape (M,); given exactly when `gallery` is.
        recall_ks: The K of each Recall@K.
        with_nmi: Also cluster the queries with k-means for NMI (seconds on large sets, CPU).
        chunk_size: Queries per matrix product; None chooses it from the gallery size.

    Returns:
        Python floats in [0, 1] under ``recall_at_{K}`` for each K, ``map_at_r``,
        ``r_precision`` and, with `with_nmi`, ``nmi``. Queries with R = 0 are left out of all but
        NMI.

    Raises:
        ValueError: On inconsistent inputs, or when no query has any relevant item.

    Example:
        Points at 0, 10, 45 and 85 degrees with labels 0, 0, 1, 1 (R = 1 for each): the 45-degree
        point (label 1) finds the 10-degree point (label 0) first and the 85-degree one second;
        every other point finds a same-label item first.

        >>> import math
        >>> angles = torch.tensor([0.0, 10.0, 45.0, 85.0]) * math.pi / 180
        >>> points = torch.stack([angles.cos(), angles.sin()], dim=1)
        >>> metrics = retrieval_metrics(points, torch.tensor([0, 0, 1, 1]), recall_ks=(1, 2),
        ...                             with_nmi=False)
        >>> metrics
        {'recall_at_1': 0.75, 'recall_at_2': 1.0, 'map_at_r': 0.75, 'r_precision': 0.75}
    """
    scores = query_scores(
        query, query_labels, gallery, gallery_labels, recall_ks, chunk_size=chunk_size
    )
    metrics = mean_scores(scores)
    if with_nmi:
        metrics["nmi"] = nmi(query, query_labels)
    return metrics


def query_scores(
    query: torch.Tensor,
    query_labels: torch.Tensor,
    gallery: torch.Tensor | None = None,
    gallery_labels: torch.Tensor | None = None,
    recall_ks: Sequence[int] = (1, 2, 4, 8),
    *,
    chunk_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Every query's Recall@K, AP@R and R-Precision, from one exact neighbour search.

    The search is deep enough for every metric: k = max(max R, max K), capped at the gallery
    size, so MAP@R and R-Precision are never cut below R. Only per-query scores are kept between
    chunks, never the whole neighbour list. Arguments as for `retrieval_metrics`.

    Returns:
        Tensors of shape (N,) on the queries' device: ``recall_at_{K}`` for each K, ``map_at_r``
        (each query's AP@R), ``r_precision``, and ``relevant``, each query's R (a query with
        R = 0 scores 0 everywhere and counts in no mean).

    Raises:
        ValueError: On inconsistent inputs, or when no query has any relevant item.
    """
    ks = _check_recall_ks(recall_ks)
    if (gallery is None) != (gallery_labels is None):
        raise ValueError("give gallery and gallery_labels together, or neither (leave-one-out)")
    query = _check_embeddings(query, "query")
    query_labels = _check_labels(query_labels, "query_labels").to(query.device)
    _check_same_length(query, query_labels, "query", "query_labels")
    gallery, labels_of_gallery, available = _checked_gallery(
        query, query_labels, gallery, gallery_labels
    )
    relevant = relevant_counts(query_labels, None if gallery is None else labels_of_gallery)
    scoring = relevant > 0
    if not bool(scoring.any()):
        raise ValueError(
            "no query has a relevant item (every query's class has no other item in the "
            "gallery); retrieval metrics need at least two items of some class"
        )
    depth = min(max(int(relevant.max()), *ks, 1), available)

    recall_scores: list[list[torch.Tensor]] = [[] for _ in ks]
    precision_scores: list[torch.Tensor] = []
    r_precision_scores: list[torch.Tensor] = []
    with torch.no_grad():
        for start, _, indices in _neighbour_chunks(query, gallery, depth, chunk_size):
            chunk_relevant = relevant[start : start + len(indices)]
            matches = labels_of_gallery[indices] == query_labels[start : start + len(indices), None]
            for scores, k in zip(recall_scores, ks, strict=True):
                scores.append(_recall_per_query(matches, k))
            precision_scores.append(_average_precision_at_r(matches, chunk_relevant))
            r_precision_scores.append(_r_precision_per_query(matches, chunk_relevant))

    scores = {
        f"recall_at_{k}": torch.cat(chunks) for chunks, k in zip(recall_scores, ks, strict=True)
    }
    scores["map_at_r"] = torch.cat(precision_scores)
    scores["r_precision"] = torch.cat(r_precision_scores)
    scores["relevant"] = relevant
    return scores


def _check_recall_ks(recall_ks: Sequence[int]) -> tuple[int, ...]:
    """`recall_ks` as a tuple of positive integers, or a ValueError."""
    ks = tuple(recall_ks)
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"recall_ks must hold positive integers; got {ks!r}")
    return ks


def _checked_gallery(
    query: torch.Tensor,
    query_labels: torch.Tensor,
    gallery: torch.Tensor | None,
    gallery_labels: torch.Tensor | None,
) -> tuple[torch.Tensor | None, torch.Tensor, int]:
    """The gallery checked (None for leave-one-out), its labels on the queries' device, and how
    many items a query can find in it."""
    if gallery is None:
        return None, query_labels, len(query) - 1
    gallery = _check_embeddings(gallery, "gallery")
    labels = _check_labels(gallery_labels, "gallery_labels").to(query.device)
    _check_same_length(gallery, labels, "gallery", "gallery_labels")
    return gallery, labels, len(gallery)


def mean_scores(scores: dict[str, torch.Tensor]) -> dict[str, float]:
    """The mean of each of `query_scores`' scores over the queries with R > 0."""
    relevant = scores["relevant"]
    return {
        name: _mean_over_scoring(values, relevant)
        for name, values in scores.items()
        if name != "relevant"
    }


def class_scores(scores: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each class's mean of `query_scores`' scores over its queries with R > 0.

    The unit of class-level statistics: a class is what an unseen test set samples, so each
    class's mean, weighted by its query count, gives back the mean over queries.

    Args:
        scores: `query_scores`' output.
        labels: The queries' class labels, shape (N,).

    Returns:
        ``label`` (each class with a scoring query, ascending), ``queries`` (its queries with
        R > 0) and each score's mean over them, as tensors of one row per class on the CPU.

    Example:
        >>> scores = {"map_at_r": torch.tensor([1.0, 0.5, 0.0, 0.25]),
        ...           "relevant": torch.tensor([1, 1, 0, 3])}
        >>> table = class_scores(scores, torch.tensor([3, 3, 5, 7]))
        >>> [table[key].tolist() for key in ("label", "queries", "map_at_r")]
        [[3, 7], [2, 1], [0.75, 0.25]]
    """
    labels = _check_labels(labels, "labels").cpu()
    scoring = scores["relevant"].cpu() > 0
    present, index = torch.unique(labels[scoring], return_inverse=True)
    counts = torch.bincount(index, minlength=len(present)).double()
    table = {"label": present, "queries": counts.long()}
    for name, values in scores.items():
        if name == "relevant":
            continue
        sums = torch.zeros(len(present), dtype=torch.float64)
        sums.index_add_(0, index, values.cpu().double()[scoring])
        table[name] = sums / counts
    return table


def _neighbour_chunks(
    query: torch.Tensor, gallery: torch.Tensor | None, k: int, chunk_size: int | None
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yields (first query row, similarities, indices) for each chunk of queries."""
    query = _check_embeddings(query, "query")
    leave_one_out = gallery is None
    if leave_one_out:
        gallery = query
    else:
        gallery = _check_embeddings(gallery, "gallery").to(query.device)
        if gallery.shape[1] != query.shape[1]:
            raise ValueError(
                f"query and gallery embeddings differ in size: {query.shape[1]} and "
                f"{gallery.shape[1]}"
            )
    available = len(gallery) - 1 if leave_one_out else len(gallery)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= available:
        raise ValueError(
            f"k must be between 1 and {available} (the gallery size"
            f"{', less the query itself' if leave_one_out else ''}); got {k!r}"
        )
    if chunk_size is None:
        chunk_size = max(1, _BLOCK_ELEMENTS // len(gallery))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1; got {chunk_size}")

    # Half-precision dot products of unit vectors lose the third decimal and reorder near ties.
    normalised_query = F.normalize(query.float(), dim=1)
    normalised_gallery = normalised_query if leave_one_out else F.normalize(gallery.float(), dim=1)
    for start in range(0, len(query), chunk_size):
        block = normalised_query[start : start + chunk_size] @ normalised_gallery.T
        if leave_one_out:
            # By index, not by similarity: an exact duplicate of a query is a true neighbour.
            rows = torch.arange(len(block), device=block.device)
            block[rows, rows + start] = float("-inf")
        similarities, indices = torch.topk(block, k, dim=1)
        yield start, similarities, indices


def _recall_per_query(matches: torch.Tensor, k: int) -> torch.Tensor:
    return matches[:, :k].any(dim=1).float()


def _average_precision_at_r(matches: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    ranks = torch.arange(1, matches.shape[1] + 1, device=matches.device)
    hits = matches & (ranks <= relevant[:, None])
    precision_at_rank = hits.cumsum(dim=1) / ranks
    return (precision_at_rank * hits).sum(dim=1) / relevant.clamp(min=1)


def _r_precision_per_query(matches: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    ranks = torch.arange(1, matches.shape[1] + 1, device=matches.device)
    hits = matches & (ranks <= relevant[:, None])
    return hits.sum(dim=1) / relevant.clamp(min=1)


def _mean_over_scoring(scores: torch.Tensor, relevant: torch.Tensor) -> float:
    """Mean of the per-query scores of the queries with R > 0."""
    scoring = relevant > 0
    count = int(scoring.sum())
    if count == 0:
        raise ValueError("no query has a relevant item (R > 0), so the metric is undefined")
    return float(scores.double()[scoring].sum() / count)


def _matches(
    neighbour_labels: torch.Tensor, query_labels: torch.Tensor, relevant: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether each neighbour has its query's label, and R on the same device."""
    if neighbour_labels.dim() != 2:
        raise ValueError(
            "neighbour_labels must have shape (queries, neighbours); "
            f"got {tuple(neighbour_labels.shape)}"
        )
    query_labels = _check_labels(query_labels, "query_labels").to(neighbour_labels.device)
    relevant = _check_labels(relevant, "relevant").to(neighbour_labels.device)
    if not len(neighbour_labels) == len(query_labels) == len(relevant):
        raise ValueError(
            f"neighbour_labels, query_labels and relevant differ in length: "
            f"{len(neighbour_labels)}, {len(query_labels)} and {len(relevant)}"
        )
    return neighbour_labels == query_labels[:, None], relevant


def _check_covers_r(matches: torch.Tensor, relevant: torch.Tensor) -> None:
    largest = int(relevant.max()) if len(relevant) else 0
    if matches.shape[1] < largest:
        raise ValueError(
            f"the neighbour lists hold {matches.shape[1]} items but a query has R = {largest}; "
            f"search with k >= {largest} (max R), else MAP@R and R-Precision are wrong"
        )


def _check_embeddings(embeddings: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2:
        shape = (
            tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings)
        )
        raise ValueError(f"{name} must be a tensor of shape (items, dimensions); got {shape}")
    if not embeddings.is_floating_point():
        raise ValueError(f"{name} must hold floats; got {embeddings.dtype}")
    if len(embeddings) == 0:
        raise ValueError(f"{name} is empty")
    if not bool(torch.isfinite(embeddings).all()):
        raise ValueError(f"{name} holds NaN or infinite values; the model probably diverged")
    return embeddings


def _check_labels(labels: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels)
        raise ValueError(f"{name} must be a tensor of shape (items,); got {shape}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must hold integers; got {labels.dtype}")
    return labels.long()


def _check_same_length(
    embeddings: torch.Tensor, labels: torch.Tensor, embeddings_name: str, labels_name: str
) -> None:
    if len(embeddings) != len(labels):
        raise ValueError(
            f"{embeddings_name} has {len(embeddings)} rows but {labels_name} has {len(labels)}"
        )
