"""Probes on constructed features where the right answer is known."""
import numpy as np
import pytest
import torch

from nbseg.errors import WeightsError
from nbseg.probes import (FeatureSet, embed_2d, embedding_panels, kmeans_benchmark, kmeans_segmentation,
                          linear_probe, patch_class_shares, patch_labels, probe_backbones, sample_patch_points,
                          saliency_iou)


def constructed(n=6, grid=4, patch=4, n_classes=3, dim=8, seed=0):
    """Images whose patches carry their class in the feature direction (plus noise); labels at pixel level."""
    g = torch.Generator().manual_seed(seed)
    patch_cls = torch.randint(0, n_classes, (n, grid, grid), generator=g)
    patch_cls[:, 0, 0] = 0
    centres = torch.eye(dim)[:n_classes] * 5
    feats = centres[patch_cls] + 0.1 * torch.randn(n, grid, grid, dim, generator=g)
    labels = patch_cls.repeat_interleave(patch, 1).repeat_interleave(patch, 2)
    attn = (patch_cls > 0).float()[:, None].repeat(1, 2, 1, 1) + 1e-3
    return FeatureSet(patches=feats, cls=feats.mean((1, 2)), attn=attn,
                      images=torch.rand(n, 3, grid * patch, grid * patch), labels=labels,
                      ids=[str(i) for i in range(n)], backbone="constructed", dataset="constructed")


class _DS:
    num_classes = 3
    class_names = ["background", "a", "b"]


def test_patch_labels_majority_and_ignore():
    labels = torch.tensor([[[1, 1, 2, 2], [1, 2, 2, 2], [255, 255, 0, 0], [255, 255, 0, 1]]])
    out = patch_labels(labels, (2, 2), n_classes=3)
    assert out.tolist() == [[[1, 2], [255, 0]]]


def test_kmeans_recovers_constructed_classes_and_protocols_differ():
    fs = constructed()
    seg = kmeans_segmentation(fs.patches, 3, scope="dataset", size=fs.image_size)
    assert seg.shape == fs.labels.shape
    bench = kmeans_benchmark(fs, _DS(), k_per_image=3, k_dataset=3, saliency_fraction=0.999)
    t = bench.table.set_index(["method", "protocol"])["miou"]
    assert t[("dataset k-means", "hungarian")] > 0.99
    assert t[("dataset k-means", "per-image")] > 0.99
    # flat attention on exactly the non-background patches: keeping ~all of its mass recovers the foreground
    assert bench.saliency_iou > 0.99
    assert set(bench.flat()) >= {"saliency_iou", "dataset k-means/hungarian/miou", "per-image k-means/per-image/miou"}


def test_saliency_iou_of_perfect_and_inverted_attention():
    fs = constructed()
    assert torch.allclose(saliency_iou(fs.attn, fs.labels, fraction=0.999), torch.ones(len(fs.ids)), atol=1e-6)
    inverted = 1.0 - fs.attn + 1e-3
    assert saliency_iou(inverted, fs.labels, fraction=0.6).max() < 0.5


def test_linear_probe_on_separable_features():
    train, test = constructed(seed=1), constructed(seed=2)
    res = linear_probe(train, test, n_classes=3)
    # bilinear upsampling of patch logits blurs the 4-px patch borders; interiors are all right (chance: ~0.33)
    assert res.pixel_acc > 0.9 and res.miou > 0.85 and res.predictions.shape == test.labels.shape


def test_patch_class_shares_sum_to_the_labelled_part():
    labels = torch.tensor([[[1, 1, 2, 2], [1, 2, 2, 2], [255, 255, 0, 0], [255, 255, 0, 1]]])
    shares = patch_class_shares(labels, (2, 2), n_classes=3)
    assert shares.shape == (1, 3, 2, 2)
    assert shares[0, :, 0, 0].tolist() == [0.0, 0.75, 0.25] and shares[0, :, 1, 0].sum() == 0.0
    assert shares[0, :, 1, 1].tolist() == [0.75, 0.25, 0.0]


def test_subset_and_patch_points():
    fs = constructed()
    sub = fs.subset([4, 1])
    assert sub.ids == ["4", "1"] and torch.equal(sub.patches[0], fs.patches[4]) and torch.equal(sub.labels[1],
                                                                                                  fs.labels[1])
    x, y, index = sample_patch_points(fs, 3, max_points=None)
    assert len(x) == 6 * 16 and torch.equal(y, patch_labels(fs.labels, fs.grid, 3).reshape(-1))
    x, y, index = sample_patch_points(fs, 3, max_points=20, seed=1)
    assert len(x) == 20 and bool((index[1:] > index[:-1]).all())
    assert torch.equal(x, fs.patches.reshape(-1, 8)[index])


def test_embed_2d_and_shared_panels():
    fs = constructed()
    x, y, _ = sample_patch_points(fs, 3, max_points=None)
    assert embed_2d(x, "pca").shape == (len(x), 2)
    points = embed_2d(x[:60], "tsne", max_iter=250)
    assert points.shape == (60, 2) and np.isfinite(points).all()
    with pytest.raises(ValueError, match="unknown 2-D embedding method"):
        embed_2d(x, "umap")
    panels = embedding_panels(fs, {"one": [0], "all": range(6)}, 3)
    assert len(panels["one"][0]) == 16 and len(panels["all"][0]) == 96
    # one PCA plane for all panels: the single image's points are among the points of all images
    one, every = panels["one"][0], panels["all"][0]
    assert np.allclose(one, every[:16], atol=1e-5)


def test_probe_backbones_roles_and_errors():
    models = probe_backbones("embedded", random_init=True)
    assert list(models) == ["random_init"] and models["random_init"].random_init
    with pytest.raises(WeightsError, match="unknown backbone"):
        probe_backbones("vit_no_such_model", compare_random_init=False)
    with pytest.raises(WeightsError, match="not both"):
        probe_backbones("embedded", "weights.pt", random_init=True)
