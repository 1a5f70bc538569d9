"""Widgets are built by library functions and driven here without a browser."""
import matplotlib
import torch

from nbseg.probes import saliency_iou
from nbseg.widgets import saliency_explorer, saliency_state
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
