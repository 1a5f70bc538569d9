"""The embedded backbone's quality measures and bars (nbseg.pretrain.quality)."""
import pytest

from nbseg import world
from nbseg.backbones import load
from nbseg.pretrain.quality import BARS, bars_met, quality_table

BASE = {"saliency_iou_dino60": 0.2, "linear_probe_pixel_acc": 0.5, "kmeans_dataset_miou": 0.1,
        "per_image_intra_deg": 30.0, "per_image_inter_deg": 50.0, "dataset_intra_deg": 40.0, "dataset_inter_deg": 20.0}


def test_bars_are_the_issue_s_numbers_and_each_one_can_fail():
    good = {**BASE, "saliency_iou_dino60": 0.45, "linear_probe_pixel_acc": 0.80, "kmeans_dataset_miou": 0.30}
    assert all(bars_met(good, BASE, raw_colour_miou=0.18).values())
    assert BARS["saliency_iou_dino60"] == 0.45 and BARS["linear_probe_pixel_acc"] == 0.80
    for key, value, bar in [("saliency_iou_dino60", 0.449, "saliency >= 0.45"),
                            ("linear_probe_pixel_acc", 0.64, "probe acc >= random + 0.15"),
                            ("kmeans_dataset_miou", 0.21, "k-means >= random + 0.12"),
                            ("per_image_intra_deg", 45.0, "per-image angles tighter than dataset")]:
        met = bars_met({**good, key: value}, BASE, raw_colour_miou=0.05)
        assert not met[bar] and sum(not v for v in met.values()) >= 1, (key, met)
    assert not bars_met(good, BASE, raw_colour_miou=0.19)["k-means >= raw colour + 0.12"]


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    return world.write_world(tmp_path_factory.mktemp("q") / "world", world.WorldSpec(size=32, n_train=6, n_val=4),
                             workers=1, progress=False)


def test_quality_table_measures_every_backbone_beside_raw_colour(tiny_world):
    table = quality_table({"random": load("embedded", random_init=True)}, root=tiny_world, n_val=3, n_train=4)
    assert list(table["features"]) == ["raw RGB pixels (colour alone)", "random"]
    row = table.iloc[1]
    assert row["n_val"] == 3 and row["n_train_probe"] == 4 and "RANDOM INIT" in row["backbone"]
    for key in ("saliency_iou_dino60", "kmeans_dataset_miou", "linear_probe_pixel_acc", "linear_probe_miou"):
        assert 0.0 <= row[key] <= 1.0, key
    assert 0 < table.iloc[0]["kmeans_dataset_miou"] <= 1
    assert row["per_image_intra_deg"] > 0 and row["dataset_intra_deg"] > 0
