"""Intra- and inter-class angles of hand-made vectors at known angles (DCN §1)."""
import math

import pytest
import torch

from nbseg.angles import (DCN_REPORTED, angle_study, angle_table, class_angles, class_centres,
                          pixel_weighted_embeddings)


def at(degrees, dim=4, scale=1.0):
    """Unit vectors (scaled) in the plane of the first two axes, at the given angles."""
    rad = torch.deg2rad(torch.tensor(degrees, dtype=torch.float64))
    v = torch.zeros(len(degrees), dim, dtype=torch.float64)
    v[:, 0], v[:, 1] = torch.cos(rad), torch.sin(rad)
    return v * scale


def test_known_angles():
    # class 0 at 0 deg +- 20, class 1 at 60 +- 20, class 2 at 150 +- 20 (each symmetric about its centre)
    x = torch.cat([at([-20, 20]), at([40, 80], scale=3.0), at([130, 170], scale=0.5)])
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    a = class_angles(x.float(), y)
    assert a.intra_deg == pytest.approx(20.0, abs=1e-4)
    # smallest centre-to-centre angle per class: 60, 60, 90 -> mean 70
    assert a.inter_per_class.tolist() == pytest.approx([60.0, 60.0, 90.0], abs=1e-4)
    assert a.inter_deg == pytest.approx(70.0, abs=1e-4)
    assert a.classes.tolist() == [0, 1, 2] and a.to_centre.shape == (6,)


def test_weights_ignore_and_a_single_class():
    x = at([0, 30, 90])
    y = torch.tensor([5, 5, 255])
    a = class_angles(x, y, weights=torch.tensor([3.0, 1.0, 1.0]))
    # weighted centre of 0 and 30 deg with weights 3:1 on the unit circle, then the weighted mean angle to it
    centre = math.degrees(math.atan2(0.25 * math.sin(math.radians(30)), 0.75 + 0.25 * math.cos(math.radians(30))))
    assert a.intra_deg == pytest.approx(0.75 * centre + 0.25 * (30 - centre), abs=1e-4)
    assert math.isnan(a.inter_deg) and a.classes.tolist() == [5]
    with pytest.raises(ValueError, match=r"embeddings \(N, D\) and labels \(N,\)"):
        class_angles(x, y[:2])


def test_centres_are_means_of_normalised_vectors():
    centres = class_centres(at([0, 90], scale=10.0), torch.tensor([0, 0]), n_classes=2)
    assert centres[0, :2].tolist() == pytest.approx([0.5, 0.5]) and torch.isnan(centres[1]).all()


def test_pixel_weighting_equals_repeating_each_patch_per_pixel():
    g = torch.Generator().manual_seed(0)
    patches = torch.randn(2, 3, 3, 5, generator=g)
    labels = torch.randint(0, 3, (2, 12, 12), generator=g)
    labels[0, :2] = 255
    emb, lab, w, image = pixel_weighted_embeddings(patches, labels, n_classes=3)
    pixels = patches.repeat_interleave(4, 1).repeat_interleave(4, 2)                    # nearest upsampling
    a = class_angles(emb, lab, w)
    b = class_angles(pixels.reshape(-1, 5), labels.reshape(-1))
    assert a.intra_deg == pytest.approx(b.intra_deg, abs=1e-6) and a.inter_deg == pytest.approx(b.inter_deg, abs=1e-6)
    assert w.sum().item() == pytest.approx((labels != 255).sum().item() / 16)
    assert set(image.tolist()) == {0, 1}


def test_per_image_vs_dataset_when_classes_swap_directions():
    # image 0: class 0 at 0 deg, class 1 at 90 deg; image 1: the other way round. Within each image the classes are
    # tight and 90 deg apart; over both images each class centre sits at 45 deg: the centres coincide.
    patches = torch.zeros(2, 1, 2, 4)
    patches[0, 0, 0], patches[0, 0, 1] = at([0])[0], at([90])[0]
    patches[1, 0, 0], patches[1, 0, 1] = at([90])[0], at([0])[0]
    labels = torch.tensor([[0, 1]]).repeat_interleave(2, 1).repeat(2, 2, 1)             # (2, 2, 4): left 0, right 1
    study = angle_study(patches, labels, n_classes=2)
    s = study.summary()
    assert s["per_image_intra_deg"] == pytest.approx(0.0, abs=1e-4)
    assert s["per_image_inter_deg"] == pytest.approx(90.0, abs=1e-4)
    assert s["dataset_intra_deg"] == pytest.approx(45.0, abs=1e-4)
    assert s["dataset_inter_deg"] == pytest.approx(0.0, abs=1e-3)
    assert s["n_images"] == 2 and s["n_images_inter"] == 2
    table = angle_table({"constructed": study})
    assert table["source"].tolist()[-2:] == [DCN_REPORTED["source"]] * 2 and "paper" in DCN_REPORTED["source"]
    assert table.set_index(["source", "scope"]).loc[(DCN_REPORTED["source"], "dataset"), "inter_deg"] == 24.91
    assert len(angle_table({"constructed": study}, with_paper=False)) == 2


def test_a_straddling_patch_pulls_one_images_centres_together_and_min_share_leaves_it_out():
    # one image, three patches in a row: class 0 at 0 deg, class 1 at 90 deg, and a middle patch (at 45 deg) half
    # class 0, half class 1. With every pixel (DCN's definition) the middle patch joins both centres and the
    # inter-class angle shrinks below 90; keeping pure patches only gives the features' own 90 degrees.
    patches = torch.zeros(1, 1, 3, 4)
    patches[0, 0, 0], patches[0, 0, 1], patches[0, 0, 2] = at([0])[0], at([45])[0], at([90])[0]
    labels = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]]).repeat(4, 1)[None]   # (1, 4, 12): 4 px a patch
    every = angle_study(patches, labels, n_classes=2).summary()
    pure = angle_study(patches, labels, n_classes=2, min_share=0.95).summary()
    # each centre: weight 1 at its own direction, 0.5 at 45 deg -> ~15 deg off its direction -> ~60 deg apart
    centre = math.degrees(math.atan2(0.5 * math.sin(math.radians(45)), 1 + 0.5 * math.cos(math.radians(45))))
    assert every["per_image_inter_deg"] == pytest.approx(90 - 2 * centre, abs=1e-4)
    assert every["per_image_inter_deg"] < 80
    assert pure["per_image_inter_deg"] == pytest.approx(90.0, abs=1e-4)
    assert pure["per_image_intra_deg"] == pytest.approx(0.0, abs=1e-4)
