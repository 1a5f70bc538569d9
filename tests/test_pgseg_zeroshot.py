"""PGSeg's zero-shot labels are computed per group and gathered to the pixels (the throughput fix): the result must
be the segmentation of the dense path it replaced - bilinear resize, ``argmax`` over groups, ``one_hot(group) @
affinity`` as (B, K, H, W) class scores, ``max`` over classes - on a fixed input, ties included."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nbseg.methods import get_method
from nbseg.methods.pgseg import SMOKE_PROFILE, PGSeg
from nbseg.methods.pgseg.losses import clamped_scale
from nbseg.methods.pgseg.zeroshot import (class_scores, final_assignment, group_class_affinity,
                                          labels_with_background, pixel_groups)
from nbseg.methods.workflow import load_method_config
from nbseg.world import STUFF_CLASSES, THING_CLASSES

CAPTIONS = [f"a picture of a {name} with a {other}" for name in THING_CLASSES + STUFF_CLASSES
            for other in ("ball", "sky")]


def dense_labels(model, images: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """The path before the fix, spelled out: (B, K, H, W) scores from the one-hot pixel groups, then the max."""
    encoder = model.image_encoder
    out = encoder.forward_features(images)
    assignment = final_assignment(out.stages[0].grouped.soft, out.stages[1].grouped.soft)
    affinity = group_class_affinity(encoder.group_embeddings(out.tokens), model.prompt_embeddings(model.class_names()),
                                    clamped_scale(model.logit_scale), encoder.image_embedding(out.tokens),
                                    model.cfg.topk_classes)
    maps = F.interpolate(assignment.reshape(len(images), -1, *out.grid), size=images.shape[-2:], mode="bilinear",
                         align_corners=False)
    one_hot = F.one_hot(maps.argmax(1), maps.shape[1]).to(affinity.dtype)
    best, label = torch.einsum("bhwg,bgk->bkhw", one_hot, affinity).max(1)
    if threshold is None:
        return label
    bar = torch.minimum(torch.full_like(affinity[:, 0, 0], threshold), affinity.flatten(1).amax(1))
    return torch.where(best < bar[:, None, None], torch.zeros_like(label), label + 1)


@pytest.fixture(scope="module")
def model():
    """An untrained tiny PGSeg whose prompt embeddings are fixed random vectors: at initialisation every group's
    best prompt is the same, which would make any labelling rule look right."""
    cfg = load_method_config(get_method("pgseg"), None, {**SMOKE_PROFILE, "seed": 3})
    net = PGSeg(cfg)
    net.text_encoder.tokenizer.fit(CAPTIONS)
    names = net.class_names()
    prompts = torch.randn(len(names), cfg.embed_dim, generator=torch.Generator().manual_seed(0))
    net._prompt_cache = ((cfg.prompt_template, *names), prompts)
    return net.eval()


def blocky_images() -> torch.Tensor:
    """(4, 3, 96, 96): four flat colour blocks per image plus noise, a fixed input with some structure."""
    gen = torch.Generator().manual_seed(0)
    colours = torch.rand(4, 3, 2, 2, generator=gen)
    return (F.interpolate(colours, size=(96, 96), mode="nearest") + 0.1 * torch.rand(4, 3, 96, 96, generator=gen)
            ).clamp(0, 1)


@pytest.mark.parametrize("threshold, topk", [(None, 0), (0.7, 0), (None, 3), (0.7, 3)])
def test_predict_gives_the_segmentation_of_the_dense_path(model, threshold, topk):
    images = blocky_images()
    model.cfg.background_threshold, model.cfg.topk_classes = threshold, topk
    with torch.no_grad():
        fast, slow = model.predict(images), dense_labels(model, images, threshold)
    assert fast.dtype == torch.int64 and fast.shape == (4, 96, 96)
    assert torch.equal(fast, slow)
    counts = fast.unique(return_counts=True)
    assert len(counts[0]) >= 2, counts                            # a real segmentation, not one label everywhere
    if threshold is not None:
        assert (fast == 0).any() and (fast > 0).any(), counts     # the background rule is exercised both ways


def test_ties_go_to_the_first_group_and_the_first_class():
    gen = torch.Generator().manual_seed(1)
    assignment = torch.rand(2, 3, 16, generator=gen).softmax(1)
    assignment[:, 2] = assignment[:, 0]                           # groups 0 and 2 tie on every pixel
    groups = pixel_groups(assignment, (4, 4), (12, 12))
    maps = F.interpolate(assignment.reshape(2, 3, 4, 4), size=(12, 12), mode="bilinear", align_corners=False)
    assert torch.equal(groups, maps.argmax(1)) and not (groups == 2).any() and (groups == 0).any()
    affinity = torch.tensor([[[0.4, 0.4, 0.2], [0.1, 0.3, 0.6], [0.5, 0.25, 0.25]]]).repeat(2, 1, 1)
    scores = class_scores(groups, affinity)
    assert scores.shape == (2, 3, 12, 12)
    assert torch.equal(scores.permute(0, 2, 3, 1), affinity[torch.arange(2)[:, None, None], groups])
    labels = labels_with_background(groups, affinity, None)
    assert torch.equal(labels, scores.argmax(1)) and torch.equal(labels[groups == 0], torch.zeros_like(labels[groups == 0]))
