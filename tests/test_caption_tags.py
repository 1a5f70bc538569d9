"""Weak supervision from captions (nbseg.pretrain.caption_tags): tags, pooling, loss, and a tiny run end to end that
never opens the pixel labels."""
import copy
import math
import shutil

import pytest
import torch

from nbseg import world
from nbseg.backbones import EMBEDDED_ARCH, load, read_weights_file
from nbseg.cli import main
from nbseg.errors import DataError
from nbseg.pretrain.caption_tags import (SOURCE, attention_cross_entropy, attention_pool, caption_tag_loss,
                                         lse_pool, patch_pseudo_labels, patch_self_training_loss,
                                         read_captions, tag_patterns, tags_from_captions, thing_map_target)

NAMES = world.THING_CLASSES + world.STUFF_CLASSES


def tags_of(*captions):
    return {NAMES[i] for i, t in enumerate(tags_from_captions(list(captions), tag_patterns(world.SYNONYMS, NAMES)))
            if t}


def test_tags_are_the_class_nouns_of_the_captions_synonyms_included():
    assert tags_of("a large red sphere and a square block on lawn and bricks") == {"ball", "box", "grass", "brick"}
    assert tags_of("a picture of a hoop with dunes", "a ring with beach") == {"ring", "sand"}
    assert tags_of("a starfish shape in front of clouds") == {"star", "sky"}
    # whole words only: "starfish" alone is not "star", "boxes" is not "box", colour words name no class
    assert tags_of("a starfish and boxes, orange and teal") == set()
    assert tags_of("A TOADSTOOL on MASONRY") == {"mushroom", "brick"}


def test_every_world_caption_names_its_own_classes(tmp_path):
    """The world's own captions give exactly the classes present in the image (things and stuff), but for things
    hidden entirely behind others."""
    patterns = tag_patterns(world.SYNONYMS, NAMES)
    agree = 0
    for i in range(30):
        s = world.render(0, i, 48)
        tags = tags_from_captions(s.captions, patterns).bool()
        present = torch.zeros(len(NAMES), dtype=torch.bool)
        present[torch.unique(torch.from_numpy(s.full.astype("int64")))] = True
        assert not (present & ~tags).any(), (i, s.captions)        # every visible class is named
        agree += int(torch.equal(present, tags))
    assert agree >= 25


def test_lse_pool_runs_from_mean_to_max():
    scores = torch.tensor([[[0.0, 1.0], [2.0, -1.0], [4.0, 0.0]]])            # (B=1, P=3, C=2)
    assert torch.allclose(lse_pool(scores, 1e-4), scores.mean(1), atol=1e-3)
    assert torch.allclose(lse_pool(scores, 200.0), scores.amax(1), atol=0.01)
    hand = (torch.log(torch.exp(torch.tensor([0.0, 2.0, 4.0]) * 2).mean())) / 2   # r = 2, class 0
    assert torch.isclose(lse_pool(scores, 2.0)[0, 0], hand)


def test_loss_is_thing_bce_on_cls_plus_pooled_bce_on_all_tags():
    cls_logits = torch.tensor([[2.0, -1.0, 0.5]])
    patch = torch.tensor([[[1.0, 0.0, -2.0], [3.0, 1.0, 0.0]]])               # (1, 2, 3)
    tags = torch.tensor([[1.0, 0.0, 1.0]])
    things = torch.tensor([True, True, False])
    out = caption_tag_loss(cls_logits, patch, tags, things, r=1.0)
    bce = lambda x, y: -(y * math.log(1 / (1 + math.exp(-x))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-x))))
    l_cls = (bce(2.0, 1) + bce(-1.0, 0)) / 2
    pooled = [math.log((math.exp(1) + math.exp(3)) / 2), math.log((1 + math.e) / 2),
              math.log((math.exp(-2) + 1) / 2)]
    l_patch = (bce(pooled[0], 1) + bce(pooled[1], 0) + bce(pooled[2], 1)) / 3
    assert out["cls_bce"].item() == pytest.approx(l_cls, rel=1e-5)
    assert out["patch_bce"].item() == pytest.approx(l_patch, rel=1e-5)
    assert out["loss"].item() == pytest.approx(l_cls + l_patch, rel=1e-5)
    # the stuff logit of the CLS head takes no part
    moved = cls_logits.clone()
    moved[0, 2] = -9.0
    assert caption_tag_loss(moved, patch, tags, things, 1.0)["loss"].item() == pytest.approx(out["loss"].item())


def test_attention_pool_is_the_attention_weighted_mean_of_patch_scores():
    scores = torch.tensor([[[1.0, 0.0], [3.0, -2.0]]])                       # (B=1, P=2, C=2)
    attention = torch.tensor([[0.1, 0.3]])                                    # renormalised to 0.25, 0.75
    assert torch.allclose(attention_pool(scores, attention), torch.tensor([[2.5, -1.5]]))


def test_mil_term_adds_the_bce_of_attention_pooled_thing_scores():
    cls_logits = torch.tensor([[2.0, -1.0, 0.5]])
    patch = torch.tensor([[[1.0, 0.0, -2.0], [3.0, 1.0, 0.0]]])               # (1, 2, 3)
    tags = torch.tensor([[1.0, 0.0, 1.0]])
    things = torch.tensor([True, True, False])
    attention = torch.tensor([[1.0, 3.0]])
    base = caption_tag_loss(cls_logits, patch, tags, things, r=1.0)
    out = caption_tag_loss(cls_logits, patch, tags, things, r=1.0, attention=attention, mil_weight=0.5)
    bce = lambda x, y: -(y * math.log(1 / (1 + math.exp(-x))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-x))))
    l_mil = (bce(0.25 * 1 + 0.75 * 3, 1) + bce(0.25 * 0 + 0.75 * 1, 0)) / 2    # things only: classes 0 and 1
    assert out["mil_bce"].item() == pytest.approx(l_mil, rel=1e-5)
    assert out["loss"].item() == pytest.approx(base["loss"].item() + 0.5 * l_mil, rel=1e-5)
    # the attention decides the term: looking at the patch that scores the tagged thing lowers it
    ball_at_1 = torch.tensor([[[-1.0, -1.0, 0.0], [3.0, -2.0, 0.0]]])         # patch 1 is the tagged thing 0
    looking = caption_tag_loss(cls_logits, ball_at_1, tags, things, 1.0, torch.tensor([[0.0, 1.0]]), 1.0)
    away = caption_tag_loss(cls_logits, ball_at_1, tags, things, 1.0, torch.tensor([[1.0, 0.0]]), 1.0)
    assert looking["mil_bce"] < away["mil_bce"]
    with pytest.raises(ValueError):
        caption_tag_loss(cls_logits, patch, tags, things, 1.0, None, 1.0)


def test_thing_map_target_follows_the_tagged_things_only():
    # P = 3 patches, classes: thing 0 (tagged), thing 1 (not tagged), stuff 2 (tagged)
    scores = torch.tensor([[[0.0, 5.0, 9.0], [math.log(3.0), 0.0, 0.0], [-9.0, 9.0, 0.0]]])
    tags = torch.tensor([[1.0, 0.0, 1.0]])
    things = torch.tensor([True, True, False])
    m = torch.tensor([0.5, 0.75, 1 / (1 + math.exp(9.0))])             # sigmoid of thing 0's scores
    assert torch.allclose(thing_map_target(scores, tags, things), (m / m.sum())[None], atol=1e-6)
    # no thing tagged: a uniform target (nothing to look at)
    none = thing_map_target(scores, torch.tensor([[0.0, 0.0, 1.0]]), things)
    assert torch.allclose(none, torch.full((1, 3), 1 / 3))


def test_patch_pseudo_labels_take_the_tagged_argmax_and_drop_unsure_patches():
    # classes 0 and 2 tagged, class 1 not: patch 0 prefers untagged 1 (ignored) then 2; patch 1 is unsure
    scores = torch.tensor([[[0.0, 9.0, 5.0], [1.0, 0.0, 1.0], [4.0, 0.0, 0.0]]])
    tags = torch.tensor([[1.0, 0.0, 1.0]])
    assert patch_pseudo_labels(scores, tags, 0.9).tolist() == [[2, -1, 0]]
    assert patch_pseudo_labels(scores, tags, 0.0)[0, 1].item() in (0, 2)
    assert patch_pseudo_labels(scores, torch.zeros(1, 3), 0.0).tolist() == [[-1, -1, -1]]   # no tag: no label


def test_patch_self_training_loss_is_the_cross_entropy_over_all_classes_of_the_kept_patches():
    scores = torch.tensor([[[0.0, 9.0, 5.0], [1.0, 0.0, 1.0], [4.0, 0.0, 0.0]]], requires_grad=True)
    labels = torch.tensor([[2, -1, 0]])
    by_hand = -(torch.log_softmax(scores[0, 0], 0)[2] + torch.log_softmax(scores[0, 2], 0)[0]) / 2
    assert patch_self_training_loss(scores, labels).item() == pytest.approx(by_hand.item(), rel=1e-6)
    nothing = patch_self_training_loss(scores, torch.full((1, 3), -1))
    assert nothing.item() == 0.0 and nothing.requires_grad
    tags, things = torch.tensor([[1.0, 0.0, 1.0]]), torch.tensor([True, True, False])
    base = caption_tag_loss(torch.zeros(1, 3), scores, tags, things, 1.0)
    out = caption_tag_loss(torch.zeros(1, 3), scores, tags, things, 1.0, self_training_weight=0.5,
                           self_training_threshold=0.9)
    assert out["self_training_ce"].item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx(base["loss"].item() + 0.5 * by_hand.item(), rel=1e-5)
    assert out["self_training_kept"].item() == pytest.approx(2 / 3)


def test_attention_cross_entropy_is_lowest_when_attention_matches_the_map():
    target = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    hand = -(0.5 * math.log(0.2) + 0.5 * math.log(0.4))
    assert attention_cross_entropy(target, torch.tensor([[1.0, 2.0, 1.0, 1.0]])).item() == pytest.approx(hand)
    matched = attention_cross_entropy(target, torch.tensor([[0.5, 0.5, 1e-9, 1e-9]]))
    peaky = attention_cross_entropy(target, torch.tensor([[1.0, 1e-9, 1e-9, 1e-9]]))
    assert matched.item() == pytest.approx(math.log(2), rel=1e-4) and peaky > matched
    cls_logits, patch = torch.zeros(1, 3), torch.randn(1, 4, 3)
    tags, things = torch.tensor([[1.0, 0.0, 1.0]]), torch.tensor([True, True, False])
    out = caption_tag_loss(cls_logits, patch, tags, things, 1.0, torch.ones(1, 4), 0.0, 2.0)
    base = caption_tag_loss(cls_logits, patch, tags, things, 1.0)
    expected = attention_cross_entropy(thing_map_target(patch, tags, things), torch.ones(1, 4))
    assert out["attention_ce"].item() == pytest.approx(expected.item())
    assert out["loss"].item() == pytest.approx(base["loss"].item() + 2 * expected.item(), rel=1e-5)


def test_bad_captions_file_is_named(tmp_path):
    (tmp_path / "captions.jsonl").write_text('{"id": "a", "captions": ["a ball"]}\nnot json\n')
    with pytest.raises(DataError, match="line 2"):
        read_captions(tmp_path / "captions.jsonl")
    with pytest.raises(DataError, match="nbseg world"):
        read_captions(tmp_path / "missing.jsonl")


@pytest.fixture(scope="module")
def caption_world(tmp_path_factory):
    """A tiny world with its pixel labels removed: weak supervision must not need them."""
    root = world.write_world(tmp_path_factory.mktemp("cw") / "world", world.WorldSpec(size=32, n_train=8, n_val=2),
                             workers=1, progress=False)
    shutil.rmtree(root / "SegmentationClass")
    shutil.rmtree(root / "SegmentationClassFull")
    return root


def _args(root, **kw):
    base = dict(data_root=str(root), image_size=32, batch_size=4, epochs=2, warmup_epochs=0.5, log_every=1,
                checkpoint_every=1)
    base.update(kw)
    return [f"{k}={v}" for k, v in base.items()]


def test_cli_trains_resumes_exactly_and_exports_a_backbone(caption_world, tmp_path, capsys):
    assert main(["pretrain-tags", str(tmp_path / "full"), *_args(caption_world), "--no-progress"]) == 0
    assert main(["pretrain-tags", str(tmp_path / "cut"), *_args(caption_world, max_steps=2), "--no-progress"]) == 0
    assert main(["pretrain-tags", str(tmp_path / "cut"), *_args(caption_world), "--no-progress"]) == 0
    a = torch.load(tmp_path / "full/checkpoint.pt", weights_only=False)["trainable"]
    b = torch.load(tmp_path / "cut/checkpoint.pt", weights_only=False)["trainable"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    out = tmp_path / "tags.pt"
    assert main(["pretrain-tags", "export", str(tmp_path / "full"), str(out), "--fp16"]) == 0
    saved = torch.load(out, weights_only=True)
    assert saved["meta"]["source"] == SOURCE and saved["arch"] == EMBEDDED_ARCH
    weights = read_weights_file(out)
    assert not any(k.startswith(("cls_head", "patch_head")) for k in weights)
    backbone = load(EMBEDDED_ARCH, weights=out)
    trained = {k[len("backbone."):]: v for k, v in a.items() if k.startswith("backbone.")}
    assert torch.allclose(backbone.model.state_dict()["pos_embed"].float(), trained["pos_embed"], atol=1e-2)
    feats = backbone.extract(torch.rand(1, 3, 32, 32))
    assert feats.patches.shape[-1] == 192


def test_training_lowers_the_tag_loss_on_a_fixed_batch(caption_world):
    """Twenty steps on one batch drive the tag losses down (below half) and the attention term down (it has a
    floor, the entropy of its target): the gradients reach both heads and the ViT."""
    from nbseg.config import load_config
    from nbseg.pretrain.caption_tags import CaptionTagConfig, _collate, build

    cfg = load_config(CaptionTagConfig, overrides=dict(data_root=str(caption_world), image_size=32, batch_size=4))
    net, data = build(cfg)
    batch = _collate([data[(i, 0)] for i in range(4)])
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    first = None
    for _ in range(20):
        out = net.training_step(batch, 0)
        terms = {k: out[k].item() for k in ("cls_bce", "patch_bce", "attention_ce")}
        first = terms if first is None else first
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert terms["cls_bce"] + terms["patch_bce"] < 0.5 * (first["cls_bce"] + first["patch_bce"])
    assert terms["attention_ce"] < first["attention_ce"]
    assert net.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    # the learning-curve probe deep-copies the ViT mid-training; its qkv hook must not hold the autograd graph
    copy.deepcopy(net.backbone)


def test_mil_term_trains_the_last_blocks_cls_attention(caption_world):
    """The MIL term's gradient reaches the last block's query/key projection through the CLS attention (the
    saliency map), and the attention it uses is the backbone's own: the same map `Backbone.extract` returns."""
    from nbseg.backbones import Backbone
    from nbseg.config import load_config
    from nbseg.pretrain.caption_tags import CaptionTagConfig, _collate, build

    cfg = load_config(CaptionTagConfig, overrides=dict(data_root=str(caption_world), image_size=32, batch_size=2,
                                                       drop_path_rate=0.0))
    net, data = build(cfg)
    net.eval()
    images, tags = _collate([data[(i, 0)] for i in range(2)])
    cls_logits, patch = net(images)
    attention = net.cls_attention()                                           # (B, P)
    frozen = Backbone(net.backbone, "t", weights_path=None, weights_sha256="", random_init=False)
    expected = frozen.extract(images, amp=False).attn.mean(1).flatten(1)
    assert torch.allclose(attention, expected, atol=1e-5)
    net.backbone.requires_grad_(True)
    net.zero_grad()
    only_mil = caption_tag_loss(cls_logits, patch, tags, net.thing_mask, 4.0, net.cls_attention(), 1.0)["mil_bce"]
    assert only_mil.grad_fn is None                                           # the logged value is detached
    pooled = attention_pool(patch[:, :, net.thing_mask], net.cls_attention())
    torch.nn.functional.binary_cross_entropy_with_logits(pooled, tags[:, net.thing_mask]).backward()
    qkv_grad = net.backbone.blocks[-1].attn.qkv.weight.grad
    dim = net.backbone.embed_dim
    assert qkv_grad[:2 * dim].abs().sum() > 0                                 # queries and keys: the attention


def test_warm_start_loads_the_vit_and_the_heads_when_the_file_has_them(caption_world, tmp_path):
    from nbseg.config import load_config
    from nbseg.errors import WeightsError
    from nbseg.pretrain.caption_tags import CaptionTagConfig, build

    base = dict(data_root=str(caption_world), image_size=32)
    cfg = load_config(CaptionTagConfig, overrides=dict(base, seed=1))
    source, _ = build(cfg)
    whole, vit_only = tmp_path / "net.pt", tmp_path / "vit.pt"
    torch.save(source.state_dict(), whole)
    torch.save(source.backbone.state_dict(), vit_only)
    fresh, _ = build(load_config(CaptionTagConfig, overrides=dict(base, seed=2)))
    assert not torch.equal(fresh.patch_head.weight, source.patch_head.weight)
    warmed, _ = build(load_config(CaptionTagConfig, overrides=dict(base, seed=2, init_weights=str(whole))))
    for k, v in source.state_dict().items():
        assert torch.equal(warmed.state_dict()[k], v), k
    vit, _ = build(load_config(CaptionTagConfig, overrides=dict(base, seed=2, init_weights=str(vit_only))))
    assert torch.equal(vit.backbone.pos_embed, source.backbone.pos_embed)
    assert torch.equal(vit.patch_head.weight, fresh.patch_head.weight)      # heads keep their seeded init
    other = tmp_path / "other.pt"
    torch.save({"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(WeightsError):
        build(load_config(CaptionTagConfig, overrides=dict(base, init_weights=str(other))))

