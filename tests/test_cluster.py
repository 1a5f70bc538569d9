"""Torch k-means: recovery of separated blobs, determinism, metric choice, degenerate inputs, helpers."""
from __future__ import annotations

import pytest
import torch

from nbseg.cluster import _lloyd, assign, kmeans, kmeans_dataset, kmeans_per_image, upsample_labels
from nbseg.evaluation import confusion_matrix, hungarian_match


def matched_accuracy(labels: torch.Tensor, truth: torch.Tensor, k: int) -> float:
    """Fraction of points whose cluster, mapped by Hungarian matching, is their true group."""
    counts = confusion_matrix(labels, truth, k, k)
    mapping = hungarian_match(counts)
    return float((mapping[labels] == truth).float().mean())


def blobs(n_per: int = 100, dim: int = 8, k: int = 4, seed: int = 0):
    """k Gaussian blobs (std 0.3) around 10 * e_i: separated in both distance and direction."""
    g = torch.Generator().manual_seed(seed)
    centres = 10 * torch.eye(dim)[:k]
    truth = torch.arange(k).repeat_interleave(n_per)
    x = centres[truth] + 0.3 * torch.randn(k * n_per, dim, generator=g)
    return x, truth


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_separated_blobs_are_recovered(metric):
    x, truth = blobs()
    labels, centroids, inertia = kmeans(x, 4, metric=metric)
    assert labels.shape == (400,) and centroids.shape == (4, 8) and inertia >= 0
    assert matched_accuracy(labels, truth, 4) == 1.0
    if metric == "cosine":
        assert torch.allclose(centroids.norm(dim=1), torch.ones(4), atol=1e-5)


def test_fixed_seed_is_deterministic_and_leaves_global_rng_alone():
    x, _ = blobs(n_per=50, k=5)
    state = torch.random.get_rng_state()
    first = kmeans(x, 5, seed=3)
    second = kmeans(x, 5, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1]) and first[2] == second[2]


def test_chunking_does_not_change_the_result():
    x, _ = blobs(n_per=30)
    big = kmeans(x, 4, metric="euclidean", chunk_size=65536)
    small = kmeans(x, 4, metric="euclidean", chunk_size=7)
    assert torch.equal(big[0], small[0])
    assert torch.allclose(big[1], small[1], atol=1e-5)


def test_cosine_groups_directions_euclidean_groups_norms():
    # Two directions 30 degrees apart, each at norm 1 and norm 10 (20 jittered points per combination).
    # By direction: Euclidean SSE ~ 4 * 20 * 4.5^2; by norm: far smaller. Cosine ignores the norm entirely.
    g = torch.Generator().manual_seed(0)
    angle = torch.tensor([0.0, torch.pi / 6]).repeat_interleave(40)          # direction group of each point
    norm = torch.tensor([1.0, 10.0]).repeat_interleave(20).repeat(2)         # norm group of each point
    angle = angle + 0.01 * torch.randn(80, generator=g)
    x = torch.stack([torch.cos(angle), torch.sin(angle)], 1) * norm[:, None]
    direction_group = torch.arange(2).repeat_interleave(40)
    norm_group = (norm > 5).long()
    cosine_labels, _, _ = kmeans(x, 2, metric="cosine")
    euclidean_labels, _, _ = kmeans(x, 2, metric="euclidean")
    assert matched_accuracy(cosine_labels, direction_group, 2) == 1.0
    assert matched_accuracy(euclidean_labels, norm_group, 2) == 1.0


def test_k_larger_than_the_number_of_distinct_points_is_an_error():
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]).repeat(10, 1)  # 30 points, 3 distinct
    with pytest.raises(ValueError, match="only 3 distinct points"):
        kmeans(x, 4, metric="euclidean")
    # cosine: (1, 1) and (2, 2) are the same direction
    same_direction = torch.tensor([[1.0, 1.0], [2.0, 2.0], [0.0, 3.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="distinct"):
        kmeans(same_direction, 3, metric="cosine")
    with pytest.raises(ValueError, match="only 3 points"):
        kmeans(x[:3], 4)
    labels, _, inertia = kmeans(x, 3, metric="euclidean")  # exactly as many clusters as distinct points
    assert inertia == pytest.approx(0.0, abs=1e-6) and labels.unique().numel() == 3


def test_an_empty_cluster_is_reseeded():
    x, truth = blobs(n_per=40, k=3)
    init = torch.stack([x[0], x[40], torch.full((8,), 1000.0)])  # the third centre attracts no point at first
    labels, centroids, _ = _lloyd(x, init, "euclidean", n_iter=20, shift_tol=0.0, chunk_size=65536)
    assert torch.bincount(labels, minlength=3).min() > 0
    assert matched_accuracy(labels, truth, 3) == 1.0


def test_assign_reproduces_the_fitted_labels():
    x, _ = blobs(n_per=20)
    for metric in ("cosine", "euclidean"):
        labels, centroids, _ = kmeans(x, 4, metric=metric)
        assert torch.equal(assign(x, centroids, metric), labels)
        assert assign(x.reshape(4, 20, 8), centroids, metric).shape == (4, 20)


def test_per_image_and_dataset_helpers_keep_shapes():
    x, _ = blobs(n_per=24, k=4)                      # 96 points
    features = x.reshape(2, 6, 8, 8)                 # (B, h, w, D)
    per_image = kmeans_per_image(features, 3, n_init=1)
    assert per_image.shape == (2, 6, 8) and per_image.dtype == torch.long
    assert torch.equal(per_image[1], kmeans_per_image(features[1:], 3, n_init=1)[0])  # batch-independent
    labels, centroids = kmeans_dataset(features, 4)
    assert labels.shape == (2, 6, 8) and centroids.shape == (4, 8)
    listed, _ = kmeans_dataset([features[0], features[1, :3]], 4)
    assert [t.shape for t in listed] == [(6, 8), (3, 8)]


def test_upsample_labels_nearest():
    labels = torch.tensor([[[0, 255], [3, 1]]], dtype=torch.uint8)
    up = upsample_labels(labels, 4)
    assert up.dtype == torch.uint8 and up.shape == (1, 4, 4)
    assert up[0].tolist() == [[0, 0, 255, 255], [0, 0, 255, 255], [3, 3, 1, 1], [3, 3, 1, 1]]
    assert upsample_labels(labels[0].long(), (2, 6)).shape == (2, 6)
    assert torch.equal(upsample_labels(up, 2), labels)  # nearest downsampling picks the block values back
