"""PGSeg: the losses, EM, matching and rejection on hand-computed cases; the tokenizer travels with the checkpoint;
zero-shot segmentation functions; the two variants differ exactly where the released code does; one training step;
exact resume; ``nbseg train | evaluate | segment --prompts | ablate pgseg`` through the registry."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nbseg.cli import main as nbseg_main
from nbseg.errors import ConfigError
from nbseg.methods import get_method
from nbseg.methods.pgseg import SMOKE_PROFILE, PGSeg
from nbseg.methods.pgseg.claims import gain_over_std, verdict
from nbseg.methods.pgseg.groupvit import gumbel_assignment
from nbseg.methods.pgseg.losses import (ema_prototypes, em_prototypes, hard_rejection_mask, hungarian_pairing,
                                        pg_loss, scalar_em_prototypes, symmetric_infonce)
from nbseg.methods.pgseg.text import EOT, SOT, UNK, WordTokenizer
from nbseg.methods.pgseg.zeroshot import (choose_background_threshold, class_scores, compactness,
                                          final_assignment, group_class_affinity, group_usage,
                                          labels_with_background, pixel_groups, richness)
from nbseg.methods.workflow import load_method_config
from nbseg.train import load_checkpoint

SPEC = get_method("pgseg")


# ----------------------------------------------------------------------------------------------------------
# Losses, EM, matching (hand-derived)
# ----------------------------------------------------------------------------------------------------------

def test_symmetric_infonce_matches_the_hand_computed_value():
    # identity pairs, scale 2: each row's logits are (2, 0) -> CE = log(1 + e^-2) in both directions
    eye = torch.eye(2)
    assert symmetric_infonce(eye, eye * 3.0, 2.0).item() == pytest.approx(math.log(1 + math.exp(-2)))
    # swapping the texts makes the "right" pair the dissimilar one: log(1 + e^2)
    assert symmetric_infonce(eye, eye.flip(0), 2.0).item() == pytest.approx(math.log(1 + math.exp(2)))


def test_em_finds_the_two_clusters_and_one_step_is_eq_1_and_2():
    x = torch.tensor([[[4.0, 0.2], [5.0, -0.1], [4.5, 0.0], [0.1, 5.0], [-0.2, 4.0]]])
    mu0 = F.normalize(torch.tensor([[1.0, 0.6], [0.6, 1.0]]), dim=-1)
    mu, z = em_prototypes(x, mu0, iters=10)
    assert torch.allclose(mu[0], F.normalize(torch.tensor([[13.5, 0.1], [-0.1, 9.0]]), dim=-1), atol=0.03)
    assert torch.allclose(z.sum(-1), torch.ones(1, 5)) and z[0, :3, 0].min() > 0.95 and z[0, 3:, 1].min() > 0.95
    # one step by hand: y = softmax_G(x mu0^T), p = normalize(sum_j y_j x_j / sum_j y_j)
    y = torch.softmax(x[0] @ mu0.t(), dim=1)
    expected = F.normalize((y / y.sum(0)).t() @ x[0], dim=-1)
    assert torch.allclose(em_prototypes(x, mu0, iters=1)[0][0], expected, atol=1e-6)
    assert not em_prototypes(x.requires_grad_(), mu0, 2)[0].requires_grad          # non-learnable


def test_scalar_em_treats_channels_as_samples():
    f = torch.tensor([[2.0, 2.0, -2.0, -2.0]])
    mu0 = torch.tensor([1.0, -1.0])
    x = f[0][:, None]
    z = torch.softmax(x * mu0[None], dim=1)
    expected = F.normalize((z / z.sum(0) * x).sum(0), dim=0)
    assert torch.allclose(scalar_em_prototypes(f, mu0, iters=1)[0], expected, atol=1e-6)
    assert scalar_em_prototypes(f, mu0, iters=10)[0, 0] > 0 > scalar_em_prototypes(f, mu0, iters=10)[0, 1]


def test_hungarian_pairing_maximises_in_the_paper_and_minimises_as_released():
    sim = torch.tensor([[[0.9, 0.1, 0.3], [0.2, 0.8, 0.1], [0.3, 0.2, 0.7]]])
    assert hungarian_pairing(sim, maximize=True).tolist() == [[0, 1, 2]]
    # the six permutations sum to 2.4, 1.2, 1.0, 0.5, 0.7, 1.4: the minimum is (1, 2, 0)
    worst = hungarian_pairing(sim, maximize=False)[0]
    assert worst.tolist() == [1, 2, 0] and sim[0, [0, 1, 2], worst].sum() == pytest.approx(0.5)


def test_hard_rejection_reads_the_diagonal_or_column_zero():
    # columns min-max normalised over groups (dim 1): column 0 -> (1, 0, 0.5), column 1 -> (0, 1, 0.05), col 2 ...
    cos = torch.tensor([[[0.9, 0.0, 0.5], [0.1, 1.0, 0.4], [0.5, 0.05, 0.6]]])
    # diagonal: (0.9-0.1)/0.8 = 1, (1-0)/1 = 1, (0.6-0.4)/0.2 = 1 -> all kept
    assert hard_rejection_mask(cos, 0.1, diagonal=True).tolist() == [[True, True, True]]
    # column 0: 1, 0, 0.5 -> row 1 rejected whatever its own pair's similarity
    assert hard_rejection_mask(cos, 0.1, diagonal=False).tolist() == [[True, False, True]]
    low = cos.clone()
    low[0, 2, 2] = 0.41                                          # (0.41 - 0.4) / 0.2 = 0.05 < 0.1
    assert hard_rejection_mask(low, 0.1, diagonal=True).tolist() == [[True, True, False]]


def test_pg_loss_is_eq_3_and_averages_only_kept_pairs():
    g = torch.eye(2)[None]
    one = 2 * math.log(1 + math.exp(-10))                         # both directions, logits (10, 0), tau = 0.1
    assert pg_loss(g, g, 10.0).item() == pytest.approx(one, rel=1e-3)
    swapped = pg_loss(g, g.flip(1), 10.0).item()
    assert swapped == pytest.approx(2 * math.log(1 + math.exp(10)))
    g3 = F.normalize(torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]]), dim=-1)
    p3 = g3[:, [0, 2, 1]]                                         # pairs 1 and 2 are wrong
    full, kept = pg_loss(g3, p3, 10.0), pg_loss(g3, p3, 10.0, torch.tensor([[True, False, False]]))
    assert kept < full and pg_loss(g3, p3, 10.0, torch.zeros(1, 3, dtype=torch.bool)).item() == 0.0


def test_ema_prototypes_mixes_then_normalises():
    out = ema_prototypes(torch.tensor([[1.0, 0.0]]), torch.tensor([[[0.0, 1.0]], [[0.0, 1.0]]]), 0.9)
    assert torch.allclose(out, F.normalize(torch.tensor([[0.9, 0.1]]), dim=-1))


def test_gumbel_assignment_is_one_hot_forward_and_softmax_backward():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, requires_grad=True)
    w = torch.randn(2, 4, 6)
    hard = gumbel_assignment(logits, hard=True, gumbel=False)
    assert torch.equal(hard.sum(1), torch.ones(2, 6)) and set(hard.detach().unique().tolist()) == {0.0, 1.0}
    (hard * w).sum().backward()
    grad_hard = logits.grad.clone()
    logits.grad = None
    (logits.softmax(1) * w).sum().backward()
    assert torch.allclose(grad_hard, logits.grad)
    assert torch.equal(hard.argmax(1), logits.argmax(1))
    noisy = gumbel_assignment(logits, hard=True, gumbel=True)
    assert not torch.equal(noisy.argmax(1), logits.argmax(1))    # the noise moves some tokens


# ----------------------------------------------------------------------------------------------------------
# Tokenizer and zero-shot functions
# ----------------------------------------------------------------------------------------------------------

def test_tokenizer_encodes_and_travels_in_the_state_dict():
    tok = WordTokenizer(16, 6).fit(["a red ball on grass", "a ball, a box"])
    ids = tok.encode(["A ball on the moon and more words"])[0]
    vocab = tok.vocabulary
    assert ids[0] == SOT and ids[1] == vocab["a"] and ids[2] == vocab["ball"] and ids[4] == UNK and ids[5] == EOT
    assert vocab["a"] < vocab["ball"] < vocab["box"]              # by frequency, then alphabetically
    fresh = WordTokenizer(16, 6)
    fresh.load_state_dict(tok.state_dict())
    assert torch.equal(fresh.encode(["a box on grass"]), tok.encode(["a box on grass"]))
    assert tok.unknown(["a red moon"]) == ["moon"]
    with pytest.raises(ConfigError, match="vocab_size >= 11"):
        WordTokenizer(8, 6).fit(["one two three four five six seven"])
    with pytest.raises(ConfigError, match="tokenizer is empty"):
        WordTokenizer(8, 6).encode(["a"])


def test_zero_shot_functions_on_a_hand_made_scene():
    a1 = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]])         # 4 patches -> 2 groups
    a2 = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])                              # groups swapped in stage 2
    final = final_assignment(a1, a2)
    assert final.tolist() == [[[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]]]
    groups = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    classes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    affinity = group_class_affinity(groups, classes, 10.0)
    assert affinity[0, 0].argmax() == 1 and affinity[0, 1].argmax() == 0
    pixels = pixel_groups(final, (2, 2), (2, 2))
    assert pixels.tolist() == [[[1, 1], [0, 0]]]
    scores = class_scores(pixels, affinity)
    assert scores.shape == (1, 2, 2, 2) and torch.equal(scores[0, :, 0, 0], affinity[0, 1])
    labels = scores.argmax(1)
    assert labels.tolist() == [[[0, 0], [1, 1]]]
    assert labels_with_background(pixels, affinity, None).tolist() == labels.tolist()
    assert labels_with_background(pixels, affinity, 0.5).tolist() == [[[1, 1], [2, 2]]]
    # a third group (no pixel) scores 0.9: the image's bar is min(0.5, 0.9), both pixel groups (0.4) fall below
    weak = torch.tensor([[[0.4, 0.35], [0.3, 0.4], [0.9, 0.05]]])
    assert labels_with_background(pixels, weak, 0.5).tolist() == [[[0, 0], [0, 0]]]
    assert labels_with_background(pixels, weak, 0.35).tolist() == [[[2, 2], [1, 1]]]
    # top-1 restriction by the image embedding keeps only class 0
    restricted = group_class_affinity(groups, classes, 10.0, image=torch.tensor([[1.0, 0.1]]), topk=1)
    assert restricted[0, :, 1].abs().max() == 0
    # the top row (group 1) is background and its best class scores 0.4: 0.5 separates it, 0.3 does not
    weak_top = torch.tensor([[[0.05, 0.95], [0.4, 0.35]]])
    best, table = choose_background_threshold([pixels], [weak_top], [torch.tensor([[[0, 0], [2, 2]]])],
                                              ["background", "a", "b"], candidates=(0.3, 0.5))
    assert best == 0.5 and table[0.5] == 1.0 and table[0.3] < 1.0


def test_compactness_and_richness():
    tokens = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    assign = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    assert compactness(tokens, assign).item() == pytest.approx(1.0)
    assert compactness(tokens, assign.flip(1)[:, :, [0, 1, 2]] * 0 + torch.tensor([[[1.0], [0.0]]])).item() < 1.0
    same = torch.ones(5, 3, 4)
    assert richness(same) == 0.0 and richness(torch.randn(200, 3, 4)) > 0.5


# ----------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------

def tiny_cfg(**overrides):
    return load_method_config(SPEC, None, {**SMOKE_PROFILE, **overrides})


def tiny_model(**overrides):
    cfg = tiny_cfg(**overrides)
    model = PGSeg(cfg)
    data = SPEC.training_dataset(cfg, model, progress=False)
    items = [data[(i, i)] for i in range(8)]
    return model, {"image": torch.stack([x["image"] for x in items]), "tokens": torch.stack([x["tokens"] for x in items])}


def test_training_step_predict_and_the_npr_schedule():
    model, batch = tiny_model(npr_start_epoch=1.0)
    assert model.steps_per_epoch == 2 and not model.npr_active(1) and model.npr_active(2)
    model.train()
    out = model.training_step(batch, 0)
    assert torch.isfinite(out["loss"]) and {"l_it", "l_pg_image", "l_pg_text"} <= set(out)
    assert out["loss"].item() == pytest.approx(out["l_it"].item(), rel=1e-6)      # lambda = beta = 0 before
    out["loss"].backward()
    assert model.image_encoder.stages[0].group_token.grad is not None
    model.eval()
    pred = model.predict(batch["image"][:2])
    assert pred.shape == (2, 96, 96) and pred.max() < 13 and pred.dtype == torch.int64
    model.cfg.background_threshold = 0.99
    assert model.predict(batch["image"][:2]).max() <= 13
    with pytest.warns(UserWarning, match="moon"):
        model.prompt_embeddings(["moon"])
    assert model._prompt_cache is not None
    model.train()
    model.training_step(batch, 3)
    assert model._prompt_cache is None                            # prompts are re-encoded after training


def test_variants_differ_where_the_released_code_does():
    paper, batch = tiny_model(variant="paper")
    official, _ = tiny_model(variant="official")
    assert not paper.pg_log_scale.requires_grad and official.pg_log_scale.requires_grad
    groups = torch.eye(3)[None]
    protos = torch.eye(3)[None]
    assert torch.equal(paper._pairing_and_keep(groups, protos)[0], protos)
    assert not torch.equal(official._pairing_and_keep(groups, protos)[0], protos)       # minimising pairing
    for model in (paper, official):
        model.train()
        before = model.image_encoder.stages[0].prototypes.clone()
        model.training_step(batch, 0)
        moved = not torch.equal(before, model.image_encoder.stages[0].prototypes)
        assert moved == (model is paper)                          # the I-NPR EMA never runs as released
        model.eval()
        text_before = model.text_prototypes.clone()
        model._prompt_cache = None
        model.prompt_embeddings(["ball", "box"])
        assert torch.equal(text_before, model.text_prototypes) == (model is paper)   # T-NPR EMA at eval


def test_config_errors_name_the_fix():
    with pytest.raises(ConfigError, match="variant must be one of"):
        tiny_cfg(variant="released")
    with pytest.raises(ConfigError, match="groups_stage2 <= groups_stage1"):
        tiny_cfg(groups_stage1=4, groups_stage2=8)
    with pytest.raises(ConfigError, match="takes no frozen backbone"):
        PGSeg(tiny_cfg(), backbone=object())


# ----------------------------------------------------------------------------------------------------------
# Resume and the generic commands
# ----------------------------------------------------------------------------------------------------------

TINY = [f"{k}={v}" for k, v in SMOKE_PROFILE.items()]


def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert nbseg_main(["train", "pgseg", str(a), *TINY, "epochs=2", "npr_start_epoch=1", "--no-eval",
                       "--no-progress"]) == 0
    assert nbseg_main(["train", "pgseg", str(b), *TINY, "epochs=2", "npr_start_epoch=1", "max_steps=3",
                       "--no-eval", "--no-progress"]) == 0
    assert load_checkpoint(b)["step"] == 3
    assert nbseg_main(["train", "pgseg", str(b), *TINY, "epochs=2", "npr_start_epoch=1", "--no-eval",
                       "--no-progress"]) == 0
    sa, sb = load_checkpoint(a)["trainable"], load_checkpoint(b)["trainable"]
    assert sa.keys() == sb.keys() and "text_encoder.tokenizer.table" in sa
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_train_evaluate_segment_with_prompts(tmp_path):
    run = tmp_path / "run"
    assert nbseg_main(["train", "pgseg", str(run), *TINY, "--eval-limit", "8", "--no-progress"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["method"] == "pgseg" and m["variant"] == "paper" and m["finished"] and m["steps"] == 2
    for key in ("pgseg/full/miou", "pgseg/voc/miou", "pgseg/full/synonyms_miou", "pgseg/full/hungarian_miou",
                "kmeans/full/miou"):
        assert 0.0 <= m[key] <= 1.0, key
    assert 0.05 <= m["pgseg/voc/bg_threshold"] <= 0.95 and m["pgseg/compactness"] <= 1.0
    assert 1 <= m["pgseg/groups_per_image"] <= SMOKE_PROFILE["groups_stage2"]
    assert 1 / SMOKE_PROFILE["groups_stage2"] <= m["pgseg/largest_group_share"] <= 1.0
    assert m["dataset"] == "world/val" and m["n_images"] == 8
    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(image)
    assert nbseg_main(["segment", "--checkpoint", str(run), str(image), "--out", str(tmp_path / "seg"),
                       "--prompts", "ball, box", "--no-progress"]) == 0
    with Image.open(tmp_path / "seg" / "img.png") as label:
        assert label.size == (56, 40) and np.asarray(label).max() < 2
    assert nbseg_main(["segment", "--checkpoint", str(run), str(image), "--out", str(tmp_path / "seg2"),
                       "--prompts", " , "]) == 2


def test_ablate_pgseg_smoke(tmp_path):
    assert nbseg_main(["ablate", "pgseg", str(tmp_path), "--only", "groupvit", "official:inpr+tnpr+hrs",
                       "--no-progress"]) == 0
    import pandas as pd

    table = pd.read_csv(tmp_path / "ablations.csv")
    assert list(table["ablation"]) == ["groupvit", "official:inpr+tnpr+hrs"] and (table["status"] == "ok").all()
    assert list(table["variant"]) == ["paper", "official"]
    assert table.iloc[0][SPEC.paper_column] == pytest.approx(50.50)


def test_a_folder_of_images_with_captions_trains_and_missing_captions_name_the_fix(tmp_path):
    from nbseg.errors import DataError

    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"img{i}.png")
    lines = [json.dumps({"id": f"img{i}", "captions": [f"a red ball number {i}", "a box"]}) for i in range(3)]
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
    cfg = tiny_cfg(data="folder", data_root=str(tmp_path), train_limit=None, batch_size=2)
    with pytest.raises(DataError, match="have no captions in .*img3"):
        SPEC.training_dataset(cfg, PGSeg(cfg), progress=False)
    (tmp_path / "captions.jsonl").write_text("\n".join(lines + [json.dumps({"id": "img3", "captions": ["a kite"]})]))
    model = PGSeg(cfg)
    pairs = SPEC.training_dataset(cfg, model, progress=False)
    item = pairs[(3, 7)]
    assert len(pairs) == 4 and item["image"].shape == (3, 96, 96) and model.steps_per_epoch == 2
    assert item["tokens"][1] == model.text_encoder.tokenizer.vocabulary["a"]


def test_shipped_configs_load_with_the_papers_settings():
    world, voc = load_method_config(SPEC, "world"), load_method_config(SPEC, "voc")
    assert (voc.image_size, voc.patch_size, voc.dim, voc.groups_stage1, voc.groups_stage2) == (224, 16, 384, 64, 8)
    assert (voc.em_iters, voc.ema_momentum, voc.rejection_threshold, voc.pg_temperature) == (10, 0.9, 0.1, 0.1)
    assert (voc.npr_weight, voc.tnpr_weight, voc.npr_start_epoch, voc.epochs) == (0.1, 0.01, 30, 40)
    assert world.image_size // world.patch_size == 12 and world.groups_stage2 == 8 and world.variant == "paper"


def test_table4_verdict_is_the_gain_over_the_larger_seed_std():
    r = gain_over_std([10.0, 12.0], [15.0, 15.0])                  # gain 4, stds 1.41 and 0
    assert r["gain"] == pytest.approx(4.0) and r["std"] == pytest.approx(2 ** 0.5) and r["supported"]
    assert not gain_over_std([10.0, 14.0], [14.0, 14.0])["supported"]  # gain 2 < std 2.83
    assert not gain_over_std([10.0], [20.0])["supported"]             # one seed: no spread to judge by
    runs = pd.DataFrame({"ablation": ["groupvit", "groupvit", "full", "full"], "full mIoU %": [10.0, 12.0, 15, 15],
                         "voc mIoU %": [20.0, 21.0, 19.0, 20.0]})
    v = verdict(runs, "groupvit", "full")
    assert v["full"]["supported"] and not v["voc"]["supported"] and v["voc"]["gain"] == pytest.approx(-1.0)


def test_group_usage_counts_the_groups_owning_pixels_and_the_largest_share():
    one = torch.zeros(2, 2, dtype=torch.long)                       # every pixel in group 0: collapsed
    split = torch.tensor([[0, 3], [3, 3]])                          # groups 0 and 3, 3 of 4 pixels in group 3
    used, largest = group_usage(torch.stack([one, split]), n_groups=4)
    assert used.tolist() == [1, 2]
    assert largest.tolist() == pytest.approx([1.0, 0.75])
