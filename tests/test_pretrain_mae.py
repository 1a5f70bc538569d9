"""MAE (masked autoencoding) as an objective of ``nbseg pretrain``: the pure pieces and the run."""
import math

import pytest
import torch
from torch import nn

from nbseg.errors import ConfigError
from nbseg.pretrain.objectives import mae
from nbseg.pretrain.train import build_networks, pretrain
from tests.test_pretrain import tiny_world  # noqa: F401  (the fixture)
from tests.test_pretrain_gpu_path import run_stopped_and_resumed, tiny_cfg


def test_patchify_orders_patches_row_major_with_pixels_as_p_p_c():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    p = mae.patchify(x, 2)
    assert p.shape == (2, 6, 12)
    # patch (row 1, col 2) of image 1: rows 2-3, cols 4-5; its values laid out as (y, x, channel)
    expected = x[1, :, 2:4, 4:6].permute(1, 2, 0).reshape(-1)
    assert torch.equal(p[1, 1 * 3 + 2], expected)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        mae.patchify(torch.zeros(1, 3, 5, 6), 2)


def test_norm_pix_targets_standardise_each_patch_and_ignore_its_colour_offset_and_contrast():
    patches = torch.rand(3, 5, 12)
    t = mae.norm_pix_targets(patches)
    torch.testing.assert_close(t.mean(-1), torch.zeros(3, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(t.var(-1), torch.ones(3, 5), atol=1e-3, rtol=0)
    # a brighter, higher-contrast copy of the same patch has the same target
    torch.testing.assert_close(mae.norm_pix_targets(0.3 + 2.0 * patches), t, atol=1e-4, rtol=0)


def test_random_token_masking_keeps_the_asked_share_and_restores_positions():
    gen = torch.Generator().manual_seed(0)
    keep, restore, hidden = mae.random_token_masking(4, 16, 0.75, gen, "cpu")
    assert keep.shape == (4, 4) and restore.shape == (4, 16)
    assert hidden.sum(1).tolist() == [12] * 4
    for b in range(4):
        assert not hidden[b, keep[b]].any()                       # the kept tokens are exactly the visible ones
        assert sorted(restore[b].tolist()) == list(range(16))     # a permutation
    a = mae.random_token_masking(4, 16, 0.75, torch.Generator().manual_seed(0), "cpu")[0]
    assert torch.equal(a, keep)
    with pytest.raises(ValueError):
        mae.random_token_masking(4, 16, 1.0, gen, "cpu")


def test_masked_reconstruction_loss_by_hand():
    pred = torch.zeros(1, 3, 2)
    target = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [3.0, 3.0]]])
    hidden = torch.tensor([[True, True, False]])
    # per-patch MSE: 1, 2, 9; mean over the two hidden ones = 1.5 (the visible patch does not count)
    assert mae.masked_reconstruction_loss(pred, target, hidden).item() == pytest.approx(1.5)


def test_encode_visible_with_every_patch_kept_is_the_backbone_forward(tiny_world):
    vit = build_networks(tiny_cfg(tiny_world))[0].backbone.eval()
    x = torch.rand(2, 3, 16, 16)
    everything = torch.arange(4).expand(2, 4)
    torch.testing.assert_close(mae.encode_visible(vit, x, everything), vit.forward_features(x))
    # a subset: the CLS token and one patch, the patch with its own position
    one = mae.encode_visible(vit, x, torch.tensor([[3], [1]]))
    assert one.shape == (2, 2, vit.embed_dim)


def test_decoder_puts_visible_tokens_back_in_place_and_mask_tokens_elsewhere():
    dec = mae.MAEDecoder(encoder_dim=12, n_tokens=4, patch=2, dim=12, depth=1, heads=2)
    with torch.no_grad():                                   # make it a pure re-arrangement
        dec.embed.weight.copy_(torch.eye(12))
        dec.embed.bias.zero_()
        dec.pos_embed.zero_()
        dec.pred.weight.copy_(torch.eye(12))
        dec.pred.bias.zero_()
    dec.blocks, dec.norm = nn.Identity(), nn.Identity()
    keep, restore, hidden = mae.random_token_masking(3, 4, 0.5, torch.Generator().manual_seed(1), "cpu")
    encoded = torch.randn(3, 1 + 2, 12)                     # CLS + 2 visible tokens
    out = dec(encoded, restore)
    for b in range(3):
        for j, n in enumerate(keep[b].tolist()):
            torch.testing.assert_close(out[b, n], encoded[b, 1 + j])
        for n in hidden[b].nonzero().flatten().tolist():
            torch.testing.assert_close(out[b, n], dec.mask_token[0, 0])
    with pytest.raises(ValueError, match="built for 4 patches"):
        dec(encoded, restore[:, :3])


def test_mae_alone_resumes_exactly_and_exports_a_loadable_backbone(tiny_world, tmp_path):
    from nbseg.backbones import load
    from nbseg.pretrain.train import export_teacher

    a, log = run_stopped_and_resumed(tiny_world, tmp_path, patch_loss_weight=0.0, dino_loss_weight=0.0,
                                     mae_loss_weight=1.0, mae_decoder_dim=16, mae_decoder_heads=2, n_local=0)
    assert log["loss"] == log["mae_loss"] and all(0 < float(v) < 10 for v in log["mae_loss"])
    assert any(k.startswith("mae_decoder.") for k in a["student"])
    # MAE alone never touches the DINO center
    assert a["center"].abs().sum() == 0
    out = export_teacher(tmp_path / "full", tmp_path / "mae.pt")
    backbone = load(a["arch"], weights=out)
    assert not any("mae_decoder" in k for k in torch.load(out, weights_only=False)["state_dict"])
    assert backbone.extract(torch.rand(1, 3, 16, 16)).patches.shape == (1, 2, 2, backbone.dim)


def test_mae_beside_dino_adds_its_loss_and_changes_the_run(tiny_world, tmp_path):
    both = pretrain(tiny_cfg(tiny_world, patch_loss_weight=0.0, mae_loss_weight=0.5, mae_decoder_dim=16,
                             mae_decoder_heads=2), tmp_path / "both", progress=False)
    dino = pretrain(tiny_cfg(tiny_world, patch_loss_weight=0.0), tmp_path / "dino", progress=False)
    assert both["finished"] and math.isfinite(both["loss"])
    rows = [r.split(",") for r in (tmp_path / "both/log.csv").read_text().splitlines()]
    header = rows[0]
    first = dict(zip(header, rows[1]))
    dino_first = dict(zip(header, (tmp_path / "dino/log.csv").read_text().splitlines()[1].split(",")))
    # at step 1 both runs start from the same weights and views: the total is DINO's loss + 0.5 * MAE's
    assert float(first["loss"]) == pytest.approx(float(dino_first["loss"]) + 0.5 * float(first["mae_loss"]),
                                                 abs=1e-4)
    a = torch.load(tmp_path / "both/checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "dino/checkpoint.pt", weights_only=False)
    assert not torch.equal(a["teacher"]["backbone.pos_embed"], b["teacher"]["backbone.pos_embed"])


@pytest.mark.parametrize("overrides, message", [
    ({"augment_on": "cpu", "mae_loss_weight": 1.0}, "mae_loss_weight needs augment_on=device"),
    ({"dino_loss_weight": 0.0, "patch_loss_weight": 0.0}, "nothing to train"),
    ({"mae_loss_weight": 1.0, "mae_mask_ratio": 1.0}, "mae_mask_ratio"),
    ({"dino_loss_weight": -1.0}, "must be >= 0"),
])
def test_mae_config_errors_name_the_fix(tiny_world, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        pretrain(tiny_cfg(tiny_world, **overrides), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_mae_alone_under_torchrun_trains_the_encoder_and_leaves_the_dino_head(tiny_world, tmp_path):
    """Two gloo processes: DDP must be told that MAE alone gives the DINO head no gradient (else it raises)."""
    import os
    import subprocess
    import sys

    common = [f"data_root={tiny_world}", "data=world", "image_size=32", "global_size=16", "local_size=8", "n_local=0",
              "batch_size=4", "epochs=1", "out_dim=32", "head_hidden_dim=16", "bottleneck_dim=8", "device=cpu",
              "augment_on=device", "dino_loss_weight=0", "mae_loss_weight=1", "mae_decoder_dim=16",
              "mae_decoder_heads=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           "29519", "-m", "nbseg", "pretrain", str(tmp_path / "ddp"), *common, "--no-progress"],
                          env=env, timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    ckpt = torch.load(tmp_path / "ddp/checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 2
    from nbseg.config import load_config
    from nbseg.pretrain.train import PretrainConfig

    fresh, _ = build_networks(load_config(PretrainConfig, overrides=dict(a.split("=", 1) for a in common)))
    start = fresh.state_dict()
    for key, value in ckpt["student"].items():
        if key.startswith("head."):
            assert torch.equal(value, start[key]), key            # no gradient, so AdamW never touched it
    assert not torch.equal(ckpt["student"]["backbone.pos_embed"], start["backbone.pos_embed"])
