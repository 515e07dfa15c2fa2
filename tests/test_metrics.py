"""Retrieval metrics: hand-computed cases, chunking, half precision and pytorch-metric-learning."""

from __future__ import annotations

import math

import pytest
import torch

from gapan.metrics import (
    map_at_r,
    nearest_neighbours,
    nmi,
    r_precision,
    recall_at_k,
    relevant_counts,
    retrieval_metrics,
)

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    ),
]


def unit_circle(degrees: list[float]) -> torch.Tensor:
    """Points on the unit circle; their cosine similarity orders them by angular distance."""
    angles = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([angles.cos(), angles.sin()], dim=1).float()


def clustered(
    num_items: int, num_classes: int, dimensions: int, spread: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random class centres plus Gaussian noise: metrics well between 0 and 1."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(num_classes, (num_items,), generator=generator)
    centres = torch.randn(num_classes, dimensions, generator=generator)
    noise = torch.randn(num_items, dimensions, generator=generator)
    return centres[labels] + spread * noise, labels


# Six points, leave-one-out. Angles and labels:
#   a 0 deg (0), b 10 (0), c 25 (1), d 45 (0), e 100 (1), f 180 (2)
# Class 0 = {a, b, d}: R = 2. Class 1 = {c, e}: R = 1. Class 2 = {f}: R = 0, left out.
# Neighbours by angular distance (labels in brackets):
#   a: b 10, c 25, d 45, e 100, f 180   -> [0, 1, 0, 1, 2]
#   b: a 10, c 15, d 35, e 90, f 170    -> [0, 1, 0, 1, 2]
#   c: b 15, d 20, a 25, e 75, f 155    -> [0, 0, 0, 1, 2]
#   d: c 20, b 35, a 45, e 55, f 135    -> [1, 0, 0, 1, 2]
#   e: d 55, c 75, f 80, b 90, a 100    -> [0, 1, 2, 0, 0]
#   f: e 80, d 135, c 155, b 170, a 180 -> [1, 0, 1, 0, 0]
SIX_DEGREES = [0.0, 10.0, 25.0, 45.0, 100.0, 180.0]
SIX_LABELS = torch.tensor([0, 0, 1, 0, 1, 2])
SIX_NEIGHBOURS = [
    [1, 2, 3, 4, 5],
    [0, 2, 3, 4, 5],
    [1, 3, 0, 4, 5],
    [2, 1, 0, 4, 5],
    [3, 2, 5, 1, 0],
    [4, 3, 2, 1, 0],
]


def test_nearest_neighbours_follow_angular_order() -> None:
    similarities, indices = nearest_neighbours(unit_circle(SIX_DEGREES), k=5)
    assert indices.tolist() == SIX_NEIGHBOURS
    assert similarities.dtype == torch.float32
    # a's neighbours: cos 10, cos 25, cos 45, cos 100, cos 180.
    expected = torch.tensor([10.0, 25.0, 45.0, 100.0, 180.0]).deg2rad().cos()
    torch.testing.assert_close(similarities[0], expected)


def test_relevant_counts_leave_one_out_and_gallery() -> None:
    assert relevant_counts(SIX_LABELS).tolist() == [2, 2, 1, 2, 1, 0]
    # Query/gallery: the query's own class is counted in full; a class absent from the gallery
    # (label 7) has R = 0.
    assert relevant_counts(torch.tensor([0, 1, 7]), torch.tensor([1, 0, 0, 1, 1])).tolist() == [
        2,
        3,
        0,
    ]


def test_hand_computed_leave_one_out() -> None:
    metrics = retrieval_metrics(
        unit_circle(SIX_DEGREES), SIX_LABELS, recall_ks=(1, 2, 4), with_nmi=False
    )
    # f (R = 0) is left out, so every mean is over a, b, c, d, e.
    # Recall@1: a yes, b yes, c no (b is 0), d no (c is 1), e no (d is 0)        -> 2/5.
    # Recall@2: c [0, 0] no; d [1, 0] yes; e [0, 1] yes                         -> 4/5.
    # Recall@4: c [0, 0, 0, 1] yes                                             -> 5/5.
    # MAP@R: a (R=2) [0, 1]: (1/1)/2 = 0.5; b likewise 0.5; c (R=1) [0]: 0;
    #        d (R=2) [1, 0]: (1/2)/2 = 0.25; e (R=1) [0]: 0   -> (0.5+0.5+0+0.25+0)/5 = 0.25.
    # R-Precision: a 1/2, b 1/2, c 0, d 1/2, e 0              -> 1.5/5 = 0.3.
    expected = {
        "recall_at_1": 0.4,
        "recall_at_2": 0.8,
        "recall_at_4": 1.0,
        "map_at_r": 0.25,
        "r_precision": 0.3,
    }
    assert metrics == pytest.approx(expected, abs=1e-12)
    assert all(type(value) is float for value in metrics.values())


def test_map_at_r_counts_only_the_first_r_ranks() -> None:
    neighbour_labels = torch.tensor([[0, 1, 0], [0, 0, 1], [1, 0, 0], [1, 1, 0]])
    query_labels = torch.tensor([0, 0, 0, 0])
    # Query 0 with R = 3, hits at ranks 1 and 3: (1/1 + 2/3)/3 = 5/9.
    # Query 1 with R = 2, hits at ranks 1 and 2: (1/1 + 2/2)/2 = 1.
    # Query 2 with R = 2, hit at rank 2 only (rank 3 is beyond R): (1/2)/2 = 1/4.
    # Query 3 with R = 2, no hit in the first two ranks: 0.
    relevant = torch.tensor([3, 2, 2, 2])
    assert map_at_r(neighbour_labels, query_labels, relevant) == pytest.approx(
        (5 / 9 + 1 + 1 / 4 + 0) / 4
    )
    # R-Precision: 2/3, 2/2, 1/2, 0/2.
    assert r_precision(neighbour_labels, query_labels, relevant) == pytest.approx(
        (2 / 3 + 1 + 1 / 2 + 0) / 4
    )
    # With R = 2, query 0's list [0, 1, 0] is (1/1)/2 = 0.5, not the average precision over the
    # whole list, (1/1 + 2/3)/2.
    assert map_at_r(neighbour_labels[:1], query_labels[:1], torch.tensor([2])) == 0.5
    # Recall@1: queries 0 and 1 hit at rank 1; Recall@2 adds query 2.
    assert recall_at_k(neighbour_labels, query_labels, relevant, 1) == 0.5
    assert recall_at_k(neighbour_labels, query_labels, relevant, 2) == 0.75


def test_metrics_refuse_neighbour_lists_shorter_than_r() -> None:
    with pytest.raises(ValueError, match="max R"):
        map_at_r(torch.tensor([[0, 1]]), torch.tensor([0]), torch.tensor([3]))
    with pytest.raises(ValueError, match="max R"):
        r_precision(torch.tensor([[0, 1]]), torch.tensor([0]), torch.tensor([3]))


def test_queries_without_relevant_items_are_left_out() -> None:
    neighbour_labels = torch.tensor([[0, 1], [0, 1]])
    query_labels = torch.tensor([0, 5])
    relevant = torch.tensor([1, 0])
    # Only query 0 counts, and it hits at rank 1: every metric is 1, not 1/2.
    assert recall_at_k(neighbour_labels, query_labels, relevant, 1) == 1.0
    assert map_at_r(neighbour_labels, query_labels, relevant) == 1.0
    assert r_precision(neighbour_labels, query_labels, relevant) == 1.0
    with pytest.raises(ValueError, match="relevant item"):
        retrieval_metrics(unit_circle([0.0, 90.0]), torch.tensor([0, 1]), with_nmi=False)


def test_leave_one_out_keeps_exact_duplicates() -> None:
    # p0 = p1 = (1, 0) with label 0; p2 at 36.87 deg (0.8, 0.6) and p3 = (0, 1) with label 1.
    points = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    similarities, indices = nearest_neighbours(points, k=3)
    # Each duplicate finds the other first, at similarity 1, and never itself.
    assert indices[0, 0] == 1 and indices[1, 0] == 0
    assert similarities[0, 0] == pytest.approx(1.0) and similarities[1, 0] == pytest.approx(1.0)
    # p2: p0 and p1 (0.8, tied) before p3 (0.6); p3: p2 (0.6) first.
    assert set(indices[2, :2].tolist()) == {0, 1} and indices[2, 2] == 3
    assert indices[3, 0] == 2
    # Recall@1: p0 yes, p1 yes, p2 no, p3 yes -> 3/4. MAP@R (R = 1 each): 1, 1, 0, 1 -> 3/4.
    metrics = retrieval_metrics(points, labels, recall_ks=(1,), with_nmi=False)
    assert metrics == pytest.approx({"recall_at_1": 0.75, "map_at_r": 0.75, "r_precision": 0.75})


def test_leave_one_out_with_all_points_identical_never_returns_self() -> None:
    points = torch.ones(5, 3)
    _, indices = nearest_neighbours(points, k=4, chunk_size=2)
    for row, neighbours in enumerate(indices.tolist()):
        assert sorted(neighbours) == [other for other in range(5) if other != row]


def test_hand_computed_query_gallery() -> None:
    # Gallery: g0 10 deg (1), g1 30 deg (0), g2 80 deg (1), g3 60 deg (0).
    gallery = unit_circle([10.0, 30.0, 80.0, 60.0])
    gallery_labels = torch.tensor([1, 0, 1, 0])
    # Queries: q0 0 deg (0), q1 90 deg (1), q2 180 deg (2, absent from the gallery: R = 0).
    query = unit_circle([0.0, 90.0, 180.0])
    query_labels = torch.tensor([0, 1, 2])
    _, indices = nearest_neighbours(query, gallery, k=4)
    # q0: g0 10, g1 30, g3 60, g2 80. q1: g2 10, g3 30, g1 60, g0 80.
    assert indices[:2].tolist() == [[0, 1, 3, 2], [2, 3, 1, 0]]
    metrics = retrieval_metrics(
        query, query_labels, gallery, gallery_labels, recall_ks=(1, 2), with_nmi=False
    )
    # q0 (R = 2) labels [1, 0, 0, 1]: R@1 no, R@2 yes, AP@R (1/2)/2 = 0.25, RP 1/2.
    # q1 (R = 2) labels [1, 0, 0, 1]: R@1 yes, AP@R (1/1)/2 = 0.5, RP 1/2. q2 is left out.
    expected = {"recall_at_1": 0.5, "recall_at_2": 1.0, "map_at_r": 0.375, "r_precision": 0.5}
    assert metrics == pytest.approx(expected)


def test_query_gallery_does_not_exclude_an_identical_gallery_item() -> None:
    query = unit_circle([0.0])
    gallery = unit_circle([40.0, 0.0])
    similarities, indices = nearest_neighbours(query, gallery, k=2)
    assert indices.tolist() == [[1, 0]]
    assert similarities[0, 0] == pytest.approx(1.0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("with_gallery", [False, True])
def test_results_do_not_depend_on_chunk_size(device: str, with_gallery: bool) -> None:
    embeddings, labels = clustered(50, 5, 8, spread=1.0, seed=0)
    embeddings, labels = embeddings.to(device), labels.to(device)
    gallery, gallery_labels = (embeddings[20:], labels[20:]) if with_gallery else (None, None)
    query, query_labels = (embeddings[:20], labels[:20]) if with_gallery else (embeddings, labels)
    results = []
    for chunk_size in (1, 3, len(query)):
        neighbours = nearest_neighbours(query, gallery, k=10, chunk_size=chunk_size)
        metrics = retrieval_metrics(
            query, query_labels, gallery, gallery_labels, with_nmi=False, chunk_size=chunk_size
        )
        results.append((neighbours, metrics))
    (reference_similarities, reference_indices), reference_metrics = results[0]
    assert 0.0 < reference_metrics["map_at_r"] < 1.0
    for (similarities, indices), metrics in results[1:]:
        assert torch.equal(indices, reference_indices)
        torch.testing.assert_close(similarities, reference_similarities)
        assert metrics == reference_metrics


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_gives_the_same_answers(dtype: torch.dtype) -> None:
    embeddings, labels = clustered(80, 4, 16, spread=1.0, seed=1)
    half = embeddings.to(dtype)
    half_metrics = retrieval_metrics(half, labels, with_nmi=False)
    # The same values held in float32: computed in float32 either way, so equal exactly.
    assert half_metrics == retrieval_metrics(half.float(), labels, with_nmi=False)
    # And close to the unrounded embeddings (rounding may swap a near tie).
    assert half_metrics == pytest.approx(
        retrieval_metrics(embeddings, labels, with_nmi=False), abs=0.05
    )
    similarities, _ = nearest_neighbours(half, k=3)
    assert similarities.dtype == torch.float32


@pytest.mark.parametrize("with_gallery", [False, True])
def test_agrees_with_pytorch_metric_learning(with_gallery: bool) -> None:
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    embeddings, labels = clustered(300, 6, 16, spread=1.5, seed=2)
    if with_gallery:
        query, query_labels = embeddings[:100], labels[:100]
        gallery, gallery_labels = embeddings[100:], labels[100:]
    else:
        query, query_labels, gallery, gallery_labels = embeddings, labels, None, None
    calculator = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
        k="max_bin_count",
        knn_func=CustomKNN(CosineSimilarity()),  # exact search without faiss
        device=torch.device("cpu"),
    )
    expected = calculator.get_accuracy(query, query_labels, gallery, gallery_labels)
    metrics = retrieval_metrics(
        query, query_labels, gallery, gallery_labels, recall_ks=(1,), with_nmi=False
    )
    assert 0.1 < expected["mean_average_precision_at_r"] < 0.9
    assert metrics["recall_at_1"] == pytest.approx(expected["precision_at_1"], abs=1e-6)
    assert metrics["map_at_r"] == pytest.approx(expected["mean_average_precision_at_r"], abs=1e-6)
    assert metrics["r_precision"] == pytest.approx(expected["r_precision"], abs=1e-6)


def test_nmi_separated_clusters_and_random_labels() -> None:
    embeddings, labels = clustered(120, 4, 16, spread=0.01, seed=3)
    assert nmi(embeddings, labels) == pytest.approx(1.0)
    random_labels = torch.randint(4, (120,), generator=torch.Generator().manual_seed(4))
    assert (
        nmi(torch.randn(120, 16, generator=torch.Generator().manual_seed(5)), random_labels) < 0.1
    )
    metrics = retrieval_metrics(embeddings, labels, recall_ks=(1,))
    assert metrics["nmi"] == pytest.approx(1.0)
    assert metrics["recall_at_1"] == 1.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: nearest_neighbours(torch.randn(4, 2), k=4), "between 1 and 3"),
        (lambda: nearest_neighbours(torch.randn(4, 2), torch.randn(3, 5), k=1), "differ in size"),
        (lambda: nearest_neighbours(torch.randn(4), k=1), "shape"),
        (
            lambda: nearest_neighbours(torch.tensor([[0.0, float("nan")], [1.0, 0.0]]), k=1),
            "NaN",
        ),
        (
            lambda: retrieval_metrics(torch.randn(4, 2), torch.tensor([0, 0, 1])),
            "query has 4 rows but query_labels has 3",
        ),
        (
            lambda: retrieval_metrics(
                torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), torch.randn(3, 2)
            ),
            "together",
        ),
        (
            lambda: retrieval_metrics(torch.randn(4, 2), torch.tensor([0.0, 0.0, 1.0, 1.0])),
            "integers",
        ),
        (
            lambda: retrieval_metrics(
                torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), recall_ks=(0,)
            ),
            "positive integers",
        ),
    ],
)
def test_bad_input_is_refused_clearly(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
