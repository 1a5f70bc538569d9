"""Probes on constructed features where the right answer is known."""
import torch

from nbseg.probes import (FeatureSet, kmeans_benchmark, kmeans_segmentation, linear_probe, patch_labels,
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
