"""Widgets are built by library functions and driven here without a browser."""
import matplotlib
import pytest
import torch

from nbseg.probes import saliency_iou
from nbseg.probes.prototypes import consistency_view
from nbseg.widgets import (consistency_explorer, kmeans_explorer, kmeans_state, quality_explorer, saliency_explorer,
                           saliency_state)
from tests.fakes import CLASS_NAMES, ColourBackbone, colour_features
from tests.test_probes import constructed

matplotlib.use("Agg")


def test_saliency_explorer_follows_its_controls():
    fs = constructed()
    box = saliency_explorer(fs)
    picker, head, fraction = box.children[0].children
    assert box.state["index"] == 0 and box.state["head"] == "mean"
    picker.value, fraction.value = 3, 0.95
    assert box.state["index"] == 3 and box.state["fraction"] == 0.95
    expected = saliency_iou(fs.attn[3:4], fs.labels[3:4], fraction=0.95)[0].item()
    assert abs(box.state["iou"] - expected) < 1e-6
    head.value = 1
    assert torch.equal(box.state["attention"], fs.attn[3, 1])
    assert saliency_state(fs, 3, 1, 0.95)["mask"].equal(box.state["mask"])
    # the sweep's best fraction for this image is at least as good as any slider position
    assert box.state["best_iou"] >= box.state["iou"] - 1e-6 and 0.05 <= box.state["best_fraction"] <= 1.0


def test_consistency_explorer_follows_source_class_and_threshold():
    fs = colour_features()
    box = consistency_explorer(fs, 3, CLASS_NAMES, rule="value", n_show=3)
    source, klass, threshold = box.children[0].children
    assert box.state["source"] == 0 and box.state["class"] == 1 and [o[1] for o in klass.options] == [1]
    assert box.state["iou"] == 1.0                              # one colour per class: perfect at threshold 0.5
    threshold.value = 0.0                                       # cosine >= 0 keeps every patch
    assert box.state["iou"] < 0.5
    source.value = 2                                            # image 2 shows both classes
    assert [o[1] for o in klass.options] == [1, 2] and box.state["source"] == 2
    klass.value = 2
    expected = consistency_view(fs, 2, 2, 0.0, 3, rule="value")
    assert box.state["class"] == 2 and box.state["iou"] == pytest.approx(expected["iou"])
    assert box.state["targets"][0].item() == 2 and box.state["masks"].shape[0] == 3


def test_quality_explorer_follows_target_classes_and_crop():
    fs = colour_features()
    box = quality_explorer(ColourBackbone(), fs, 3, CLASS_NAMES)
    target, class_a, class_b = box.children[0].children
    source_a, source_b = box.children[1].children
    size, top, left = box.children[2].children
    assert box.state["case"].target == 2 and box.state["box"] == (0, 0, 16, 16)
    assert box.state["miou_global_crop"] == 1.0 and box.state["miou_local_crop"] == 1.0
    class_a.value, class_b.value = 1, 2
    assert box.state["case"].classes == (1, 2) and box.state["case"].sources == (0, 1)
    size.value = 24
    assert top.max == 8 and box.state["box"] == (0, 0, 24, 24)
    top.value, left.value = 8, 4
    assert box.state["box"] == (8, 4, 24, 24) and box.state["local_pred"].shape == (24, 24)
    source_a.value = 1                                          # the green prototype now comes from a blue image
    assert box.state["case"].sources[0] == 1 and box.state["miou_global_crop"] < 1.0
    class_a.value, class_b.value = 2, 1                         # choosing classes resets the sources to the best
    assert box.state["case"].sources == (1, 0) and box.state["miou_global_crop"] == 1.0
    target.value = 5
    assert box.state["case"].target == 5


def test_kmeans_explorer_follows_k_and_image():
    fs = constructed()
    box = kmeans_explorer(fs, 3, k=3)
    k, image = box.children[0].children
    assert box.state["k"] == 3 and box.state["per_image"].shape == fs.labels.shape[1:]
    assert box.state["miou_dataset"] > 0.99                    # the constructed classes are separable
    k.value, image.value = 2, 4
    assert box.state["k"] == 2 and box.state["index"] == 4 and int(box.state["per_image"].max()) <= 1
    again = kmeans_state(fs, 4, 2, 3, box.state["dataset"][None].expand(6, -1, -1))
    assert torch.equal(again["per_image"], box.state["per_image"])
