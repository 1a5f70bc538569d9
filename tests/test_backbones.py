"""Backbone loading and extraction: shapes, the CLS attention, weight layouts and the errors users hit."""
import argparse

import pytest
import torch

from nbseg import backbones
from nbseg.errors import WeightsError
from nbseg.io import sha256_file


@pytest.fixture(scope="module")
def tiny():
    return backbones.load("embedded", random_init=True)


def manual_last_attention(bb, images):
    """Recompute DINO's get_last_selfattention by hand: blocks 0..L-2, then softmax(q k^T) of the last block."""
    m = bb.model
    x = m.norm_pre(m._pos_embed(m.patch_embed(bb.normalise(images))))
    for blk in m.blocks[:-1]:
        x = blk(x)
    a = m.blocks[-1].attn
    y = m.blocks[-1].norm1(x)
    B, N, _ = y.shape
    q, k, _ = a.qkv(y).reshape(B, N, 3, a.num_heads, -1).permute(2, 0, 3, 1, 4)
    return ((q * a.scale) @ k.transpose(-2, -1)).softmax(-1)


def test_extract_shapes_and_attention_match_dino(tiny):
    images = torch.rand(2, 3, 64, 96)        # non-square, not the training size: positional embedding interpolated
    feats = tiny.extract(images)
    assert feats.patches.shape == (2, 8, 12, tiny.dim)
    assert feats.cls.shape == (2, tiny.dim)
    assert feats.attn.shape == (2, tiny.num_heads, 8, 12)
    full = manual_last_attention(tiny, images)
    torch.testing.assert_close(feats.attn, full[:, :, 0, 1:].reshape(2, -1, 8, 12), atol=1e-6, rtol=1e-5)
    # patches are forward_features' tokens after the final norm
    tokens = tiny.forward_features(images)
    torch.testing.assert_close(feats.patches.reshape(2, 96, -1), tokens[:, 1:])
    torch.testing.assert_close(feats.cls, tokens[:, 0])


def test_extract_rejects_bad_input(tiny):
    with pytest.raises(ValueError, match="multiple of the patch size"):
        tiny.extract(torch.rand(1, 3, 60, 64))
    with pytest.raises(ValueError, match="float images"):
        tiny.extract(torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8))


def test_random_init_is_seeded_and_labelled():
    a = backbones.load("embedded", random_init=True, seed=3)
    b = backbones.load("embedded", random_init=True, seed=3)
    c = backbones.load("embedded", random_init=True, seed=4)
    assert a.weights_sha256 == b.weights_sha256 != c.weights_sha256
    assert "RANDOM INIT" in a.describe()
    assert a.model.training is False and not any(p.requires_grad for p in a.parameters())


def dino_training_checkpoint(model):
    """A checkpoint in DINO's training layout: teacher/student, module.backbone. prefixes, head keys, args."""
    sd = {f"module.backbone.{k}": v.clone() for k, v in model.state_dict().items()}
    sd["module.head.mlp.0.weight"] = torch.zeros(4, model.embed_dim)
    return {"teacher": sd, "student": sd, "epoch": 3, "args": argparse.Namespace(arch="vit_small")}


def test_loads_dino_checkpoint_layout_for_real_timm_name(tmp_path):
    model = backbones.create_model("vit_small_patch16_224.dino", pretrained=False)
    path = tmp_path / "dino_deitsmall16_pretrain_full_checkpoint.pth"
    torch.save(dino_training_checkpoint(model), path)
    bb = backbones.load("vit_small_patch16_224.dino", weights=path)
    assert (bb.patch_size, bb.dim, bb.num_heads) == (16, 384, 6)
    assert bb.weights_sha256 == sha256_file(path)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(bb.model.state_dict()[k], v)
    # a bare state dict with DINO's 224-px positional embedding loads into the same name too
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    backbones.load("vit_small_patch16_224.dino", weights=tmp_path / "bare.pth")


def test_wrong_weights_name_the_file_and_keys(tmp_path):
    other = backbones.create_model("vit_small_patch8_224.dino", pretrained=False)
    path = tmp_path / "patch8.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(WeightsError, match=r"patch8\.pth.*patch_embed\.proj\.weight"):
        backbones.load("vit_small_patch16_224.dino", weights=path)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pth"):
        backbones.load("embedded", weights=tmp_path / "junk.pth")
    with pytest.raises(WeightsError, match="does not exist"):
        backbones.load("embedded", weights=tmp_path / "missing.pth")


def test_no_weights_offline_is_an_error_telling_how(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="weights=PATH"):
        backbones.load("vit_small_patch16_224.dino")


def test_embedded_missing_file_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setattr(backbones, "EMBEDDED_WEIGHTS", tmp_path / "nope.pt")
    with pytest.raises(WeightsError, match="random_init=True"):
        backbones.load("embedded")


def test_unknown_name_suggests_timm_names():
    with pytest.raises(WeightsError, match="unknown backbone"):
        backbones.load("vit_smol_patch16", random_init=True)


def test_cli_info(capsys):
    import json

    from nbseg.cli import main

    assert main(["backbones", "info", "embedded", "--random-init"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["patch_size"] == 8 and info["random_init"] is True
    assert main(["backbones", "info", "vit_smol_patch16", "--random-init"]) == 2


@pytest.mark.parametrize("name, training", [("embedded", "weakly supervised by captions, not DINO"),
                                            ("embedded-ssl", "self-supervised, DINO")])
def test_both_shipped_backbones_load_and_say_how_they_were_trained(name, training):
    """The default embedded ViT and the self-supervised one ship side by side; every title names the training."""
    bb = backbones.load(name)
    assert bb.name == name and bb.training_source == training and training in bb.describe()
    assert bb.info()["training"] == training and bb.weights_path.endswith(".pt")
    assert bb.extract(torch.rand(1, 3, 32, 32)).patches.shape == (1, 4, 4, 192)
    assert "RANDOM INIT" in backbones.load(name, random_init=True).describe()


def test_the_two_shipped_backbones_are_different_files():
    assert backbones.EMBEDDED_WEIGHTS.is_file() and backbones.EMBEDDED_SSL_WEIGHTS.is_file()
    a, b = backbones.load("embedded"), backbones.load("embedded-ssl")
    assert a.weights_sha256 != b.weights_sha256


def test_conv_stem_vit_is_a_backbone_with_8px_patches():
    """The conv-stem architecture (BatchNorm buffers included) loads, hashes and extracts like any timm ViT."""
    bb = backbones.load("nbseg_vit_tiny_convstem_patch8", random_init=True)
    again = backbones.load("nbseg_vit_tiny_convstem_patch8", random_init=True)
    assert bb.patch_size == 8 and bb.weights_sha256 == again.weights_sha256
    f = bb.extract(torch.rand(2, 3, 40, 56))
    assert f.patches.shape == (2, 5, 7, 192) and f.attn.shape == (2, 6, 5, 7)
