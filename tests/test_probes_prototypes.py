"""Prototype probes (AlignSeg §III, Table IV) on the colour world, where colour = class = embedding direction."""
import pytest
import torch

from nbseg.probes.prototypes import (QualityCase, attention_prototypes, class_images, class_mean_embeddings,
                                     class_pixel_shares, consistency_view, crop_boxes, local_view_segmentation,
                                     masked_prototypes, own_class_top1, prototype_class_similarity,
                                     prototype_segmentation, quality_cases, quality_view, semantic_consistency,
                                     semantic_quality, similarity_maps, source_prototype_table, thing_classes)
from tests.fakes import CLASS_NAMES, ColourBackbone, colour_features, colour_world


def test_masked_prototypes_and_similarity():
    patches = torch.arange(2 * 2 * 2 * 3, dtype=torch.float32).reshape(2, 2, 2, 3)
    masks = torch.tensor([[[True, False], [False, True]], [[False, False], [True, False]]])
    protos = masked_prototypes(patches, masks)
    assert torch.allclose(protos[0], (patches[0, 0, 0] + patches[0, 1, 1]) / 2)
    assert torch.allclose(protos[1], patches[1, 1, 0])
    with pytest.raises(ValueError, match=r"images \[1\] have empty masks"):
        masked_prototypes(patches, masks & torch.tensor([True, False])[:, None, None])
    sim = similarity_maps(patches, protos)
    assert sim.shape == (2, 2, 2, 2) and torch.allclose(sim[1, 1, 1, 0], torch.tensor(1.0))
    per_image = similarity_maps(patches, protos[:, None])                                # (N, 1, D): one each
    assert torch.allclose(per_image[0, 0], sim[0, 0]) and torch.allclose(per_image[1, 0], sim[1, 1])


def test_attention_prototypes_follow_the_attention():
    fs = colour_features()
    green, background = attention_prototypes(fs, [0]), attention_prototypes(fs, [0], reverse=True)
    assert green.argmax().item() == 1 and green[0, 0].item() == 0.0                      # pure green
    assert background.argmax().item() == 0                                               # mostly red
    seg = prototype_segmentation(fs.patches, torch.eye(3))
    assert torch.equal(seg, fs.labels[:, ::4, ::4])                                      # colour argmax = class


def test_shares_sources_and_thing_classes():
    _, labels = colour_world()
    shares = class_pixel_shares(labels, 3)
    assert torch.allclose(shares.sum(1), torch.ones(len(labels)))
    assert class_images(shares, 1)[0].item() == 0 and class_images(shares, 2)[0].item() == 1
    assert class_images(shares, 1, source=3)[0].item() == 3
    with pytest.raises(ValueError, match="holds no pixel of class 2"):
        class_images(shares, 2, source=0)
    assert thing_classes(CLASS_NAMES) == [1, 2] and thing_classes(["sky", "grass"]) == [0, 1]


@pytest.mark.parametrize("rule", ["mass", "value"])
def test_consistency_is_perfect_when_a_class_has_one_direction(rule):
    study = semantic_consistency(colour_features(), 3, rule=rule, fraction=0.6)
    s = study.summary()
    assert s["source_image_iou"] == 1.0 and s["all_images_iou"] == 1.0 and s["n_classes"] == 2
    assert study.sources == {1: 0, 2: 1}
    assert set(study.sweep.columns) >= {"class", "image", "order", "threshold", "iou"}
    assert list(study.mean_curve().index) == [1, 2, 4]


def test_consistency_drops_when_the_class_changes_direction_in_other_images():
    fs = colour_features()
    blue_as_green = fs.patches.clone()
    first_green_elsewhere = 2                                   # image 2's green patches turn blue: same class, other
    greens = fs.labels[first_green_elsewhere, ::4, ::4] == 1    # direction (the scatter AlignSeg observes)
    blue_as_green[first_green_elsewhere][greens] = torch.tensor([0.0, 0.0, 1.0])
    fs.patches = blue_as_green
    study = semantic_consistency(fs, 3, classes=[1], rule="value")
    curve = study.curve.set_index("n_images")
    assert curve.loc[1, "iou"] == 1.0 and curve.loc[2, "iou"] == pytest.approx(0.5)     # image 2 scores 0
    view = consistency_view(fs, 0, 1, 0.5, 3, rule="value", n_show=2)
    assert view["iou_per_image"].tolist()[:2] == [1.0, 0.0] and view["masks"].shape == (2, 32, 32)
    assert view["best_threshold"] == 0.05 and view["targets"][0].item() == 0


def test_quality_cases_pick_two_classes_and_other_images():
    _, labels = colour_world()
    cases = quality_cases(labels, 3)
    assert [c.target for c in cases] == [2, 3, 4, 5]
    for c in cases:
        assert set(c.classes) == {1, 2} and c.target not in c.sources
        assert c.sources == tuple({1: 0, 2: 1}[k] for k in c.classes) and c.background_source == c.sources[0]


def test_local_view_pastes_crops_back():
    images, labels = colour_world()
    boxes = crop_boxes((32, 32), 2)
    assert boxes == [(0, 0, 16, 16), (0, 16, 16, 16), (16, 0, 16, 16), (16, 16, 16, 16)]
    seg = local_view_segmentation(ColourBackbone(), images, torch.eye(3), boxes)
    assert torch.equal(seg, labels)


def test_semantic_quality_is_perfect_on_the_colour_world():
    fs = colour_features()
    study = semantic_quality(ColourBackbone(), fs, 3, CLASS_NAMES, fraction=0.6, tiles=2)
    table = study.table.set_index(["view", "region"])
    assert len(table) == 6 and (table["miou"] == 1.0).all()
    assert table.loc[("global", "salient"), "pixels"] + table.loc[("global", "non-salient"), "pixels"] == \
        table.loc[("global", "all"), "pixels"]
    assert study.summary()["n_cases"] == 4 and study.local_pred.shape == (4, 32, 32)
    view = quality_view(ColourBackbone(), fs, QualityCase(2, (1, 2), (0, 1), 0), (8, 8, 16, 16), 3)
    assert view["miou_global_crop"] == 1.0 and view["miou_local_crop"] == 1.0
    assert view["local_pred"].shape == (16, 16) and torch.equal(view["global_pred"], fs.labels[2])


def test_prototype_class_table_rows_sum_to_one_with_the_own_class_highest():
    fs = colour_features()
    means = class_mean_embeddings(fs, 3)
    assert means.argmax(1).tolist() == [0, 1, 2]
    noisy = means + 0.05 * torch.randn(3, 3, generator=torch.Generator().manual_seed(0))
    table = prototype_class_similarity(noisy, means, CLASS_NAMES, temperature=0.1)
    assert list(table.columns) == CLASS_NAMES and table.shape == (3, 3)
    assert table.sum(axis=1).to_numpy() == pytest.approx([1.0, 1.0, 1.0])
    assert table.to_numpy().argmax(1).tolist() == [0, 1, 2]
    absent = torch.cat([means, torch.full((1, 3), float("nan"))])                       # a class with no pixel
    assert list(prototype_class_similarity(noisy, absent, CLASS_NAMES + ["unseen"]).columns) == CLASS_NAMES
    with pytest.raises(ValueError, match="temperature"):
        prototype_class_similarity(noisy, means, CLASS_NAMES, temperature=0)
    hand_picked = source_prototype_table(fs, 3, CLASS_NAMES)
    assert list(hand_picked.index) == ["green", "blue"] and own_class_top1(hand_picked) == 1.0
