"""DCN: the modularity loss against networkx and hand values, the decoder, training on a tiny cached set, and the
region-classification pieces (nbseg.methods.dcn.regions) on constructed inputs whose answers are known."""
import itertools
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from nbseg.config import load_config
from nbseg.errors import ConfigError
from nbseg.methods.dcn import (DCN, DCNConfig, DCNDecoder, PrototypeAttention, count_regions, hard_assignment,
                              soft_assignment, training_dataset)
from nbseg.methods.dcn.losses import (cosine_affinity, hard_comembership, hard_modularity, modularity,
                                      modularity_loss, soft_comembership)
from nbseg.methods.dcn import regions as R

nx = pytest.importorskip("networkx")


# ----------------------------------------------------------------------------------------------------------
# Modularity, Eq. (7)-(10)
# ----------------------------------------------------------------------------------------------------------

def networkx_modularity(a: torch.Tensor, labels: torch.Tensor) -> float:
    """networkx's modularity of the weighted graph whose matrix is ``a``: edges a_ij (i < j), self-loops a_ii / 2
    (networkx counts a self-loop twice in the degree)."""
    g = nx.Graph()
    n = a.shape[0]
    g.add_nodes_from(range(n))
    for i, j in itertools.combinations_with_replacement(range(n), 2):
        w = float(a[i, j]) / (2 if i == j else 1)
        if w > 0:
            g.add_edge(i, j, weight=w)
    groups = [set(torch.nonzero(labels == c).flatten().tolist()) for c in torch.unique(labels)]
    return nx.algorithms.community.modularity(g, groups, weight="weight")


def test_modularity_by_hand():
    # two disjoint unit edges {0-1}, {2-3}; split along them: m = 2, Q = 2 * (1/2 - (2/4)^2) = 0.5
    a = torch.zeros(4, 4)
    a[0, 1] = a[1, 0] = a[2, 3] = a[3, 2] = 1.0
    assert modularity(a[None], hard_comembership(torch.tensor([[0, 0, 1, 1]]))).item() == pytest.approx(0.5)
    # everything in one community: Q = 0; every vertex alone: Q = -sum_i (k_i / 2m)^2 = -4 / 16
    assert modularity(a[None], hard_comembership(torch.zeros(1, 4, dtype=torch.long))).item() == pytest.approx(0.0)
    assert modularity(a[None], hard_comembership(torch.arange(4)[None])).item() == pytest.approx(-0.25)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hard_modularity_equals_networkx(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 12, 5, generator=g)
    labels = torch.randint(0, 3, (2, 12), generator=g)
    a = cosine_affinity(x)
    assert torch.allclose(torch.diagonal(a, dim1=1, dim2=2), torch.ones(2, 12), atol=1e-6)
    q = hard_modularity(x, labels)
    for b in range(2):
        assert q[b].item() == pytest.approx(networkx_modularity(a[b], labels[b]), abs=1e-5)
    # a graph without self-pairs too
    a0 = a * (1 - torch.eye(12))
    q0 = modularity(a0, hard_comembership(labels))
    assert q0[0].item() == pytest.approx(networkx_modularity(a0[0], labels[0]), abs=1e-5)


def planted(n_per: int = 10, groups: int = 3, noise: float = 0.3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(8)[:groups] * 3
    x = torch.cat([c + noise * torch.randn(n_per, 8, generator=g) for c in centres])
    return x[None], torch.arange(groups).repeat_interleave(n_per)[None]


def test_planted_partition_beats_random_partitions():
    x, truth = planted()
    q_true = hard_modularity(x, truth).item()
    g = torch.Generator().manual_seed(5)
    q_random = [hard_modularity(x, truth[:, torch.randperm(truth.shape[1], generator=g)]).item() for _ in range(50)]
    assert q_true > 0.3 and q_true > max(q_random) + 0.2
    # merging two true communities or splitting one at random also scores lower
    assert hard_modularity(x, truth.clamp(max=1)).item() < q_true


def test_soft_comembership_eq9():
    s = torch.tensor([[[0.5, -0.2], [0.8, 0.6], [-1.0, 0.9]]])         # (1, n=3, K=2)
    d = soft_comembership(s)
    # delta_ij = max_c relu(s_ic) relu(s_jc)
    expected = torch.tensor([[0.25, 0.40, 0.00], [0.40, 0.64, 0.54], [0.00, 0.54, 0.81]])
    assert torch.allclose(d[0], expected)
    onehot = F.one_hot(torch.tensor([[0, 1, 1, 2]]), 3).float()         # one-hot S = hard co-membership
    assert torch.equal(soft_comembership(onehot), hard_comembership(torch.tensor([[0, 1, 1, 2]])))


def test_modularity_loss_is_minus_modularity_and_differentiable():
    x, truth = planted()
    s = F.one_hot(truth, 3).float().requires_grad_(True)
    loss = modularity_loss(x, s)
    assert loss.item() == pytest.approx(-hard_modularity(x, truth).item(), abs=1e-6)
    loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()
    # batch mean
    x2 = torch.cat([x, x.flip(1)])
    s2 = torch.cat([s.detach(), s.detach()])
    assert modularity_loss(x2, s2).item() == pytest.approx(loss.item(), abs=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Decoder and assignments, Eq. (1)-(6)
# ----------------------------------------------------------------------------------------------------------

def test_decoder_structure_and_shapes():
    dec = DCNDecoder(dim=16, n_prototypes=5, n_stages=6, n_heads=1)
    assert len(dec.dynamic) == 6 and len(dec.self_update) == 6 and dec.n_prototypes == 5
    assert all(lin.bias is None for lin in (dec.dynamic[0].attn.q, dec.dynamic[0].attn.o))           # Eq. (1)-(4)
    assert dec.dynamic[0].ffn[0].out_features == 64                                                 # 4 D
    x = torch.randn(3, 20, 16)
    c = dec(x)
    assert c.shape == (3, 5, 16)
    # the centres depend on the image (dynamic update): another image gives other centres
    assert not torch.allclose(dec(x[:1]), dec(torch.randn(1, 20, 16)))
    with pytest.raises(ConfigError):
        DCNDecoder(dim=10, n_heads=3)


@pytest.mark.parametrize("heads", [1, 4])
def test_prototype_attention_equals_standard_attention(heads):
    torch.manual_seed(0)
    att = PrototypeAttention(16, heads)
    mha = torch.nn.MultiheadAttention(16, heads, bias=False, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([att.q.weight, att.k.weight, att.v.weight]))
        mha.out_proj.weight.copy_(att.o.weight)
    c, y = torch.randn(3, 5, 16), torch.randn(3, 20, 16)
    assert torch.allclose(att(c, y), mha(c, y, y, need_weights=False)[0], atol=1e-5)
    if heads == 1:                                                   # Eq. (1)-(2) written out
        w = [m.weight.T for m in (att.q, att.k, att.v, att.o)]
        ref = torch.softmax((c @ w[0]) @ (y @ w[1]).transpose(1, 2) / 4.0, -1) @ (y @ w[2]) @ w[3]
        assert torch.allclose(att(c, y), ref, atol=1e-5)


def test_soft_and_hard_assignment():
    patches = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.1], [-1.0, 0.0]]]])      # (1, 2, 2, D=2)
    centres = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])                                   # (1, K=2, 2)
    s = soft_assignment(patches, centres)
    assert s.shape == (1, 2, 2, 2)
    assert torch.allclose(s[0, :, 0, 0], torch.tensor([1.0, 0.0]))
    assert torch.allclose(s[0, :, 1, 1], torch.tensor([-1.0, 0.0]))
    labels = hard_assignment(s, (8, 8))
    assert labels.shape == (1, 8, 8) and labels[0, 0, 0] == 0 and labels[0, 0, 7] == 1
    assert count_regions(labels).tolist() == [2]
    assert count_regions(torch.tensor([[0, 0, 3], [1, 1, 1]])).tolist() == [2, 1]


# ----------------------------------------------------------------------------------------------------------
# The method on a tiny cached set
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from nbseg.backbones import load

    cfg = DCNConfig(input_size=48, n_stages=2, cache_root=str(tmp_path_factory.mktemp("cache")), cache_limit=8,
                    split="val", batch_size=4, epochs=8, max_steps=None, lr=3e-3, min_lr=3e-3, device="cpu",
                    log_every=1, checkpoint_every=1000)
    # the plain ViT at random init: its patch tokens differ enough for a modularity loss to move (the conv-stem
    # default's random tokens are nearly collinear, so the loss starts and stays near 0)
    backbone = load("nbseg_vit_tiny_patch8", random_init=True)
    model = DCN(cfg, backbone=backbone)
    return cfg, model, training_dataset(cfg, backbone, progress=False)


def mean_loss(model, ds) -> float:
    with torch.no_grad():
        batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
        return model.training_step(batch)["loss"].item()


def test_training_reduces_the_modularity_loss(tiny, tmp_path):
    from nbseg.train import fit

    cfg, model, ds = tiny
    assert len(ds) == 8 and ds[(0, 1)]["patches"].shape == (6, 6, 192)
    before = mean_loss(model, ds)
    summary = fit(model, ds, cfg, tmp_path / "run", progress=False)
    after = mean_loss(model, ds)
    assert summary["steps"] == 16 and after < before - 0.01, (before, after)
    out = model.training_step(torch.utils.data.default_collate([ds[i] for i in range(4)]))
    assert set(out) == {"loss", "modularity_hard", "regions"} and 1 <= out["regions"].item() <= 5


def test_predict_from_images_matches_cached_features(tiny):
    cfg, model, ds = tiny
    from nbseg.methods.dcn import open_split

    val = open_split(cfg)
    images = torch.stack([val[i].image for i in range(3)])                 # 96 px, resized to 48 inside
    from_images = model.predict(images)
    from_cache = model.predict_features(torch.stack([ds[i]["patches"] for i in range(3)]), (96, 96))
    assert from_images.shape == (3, 96, 96) and from_images.max() < cfg.n_prototypes
    assert (from_images == from_cache).float().mean() > 0.97                # fp16 cache vs fp32 features
    batch = {"image": images}
    assert torch.isfinite(model.training_step(batch)["loss"])
    prov = model.provenance()
    assert prov["method"] == "dcn" and prov["random_init"] and prov["backbone"] == "nbseg_vit_tiny_patch8"


def test_configs_load_and_validate():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "nbseg" / "configs"
    world = load_config(DCNConfig, root / "dcn_world.yaml")
    voc = load_config(DCNConfig, root / "dcn_voc.yaml")
    assert (world.n_prototypes, world.n_stages, world.lr, world.min_lr, world.weight_decay, world.batch_size,
            world.max_steps) == (5, 6, 1e-4, 1e-4, 0.01, 32, 2500)
    assert voc.input_size == 224 and voc.region_size == 224 and voc.n_fg_classes == 20
    with pytest.raises(ConfigError):
        load_config(DCNConfig, None, ["n_prototypes=1"]).validate()


# ----------------------------------------------------------------------------------------------------------
# Regions: constructed inputs
# ----------------------------------------------------------------------------------------------------------

def two_maps():
    a = torch.zeros(8, 8, dtype=torch.long)
    a[2:5, 3:7] = 4                                   # region 4: rows 2-4, cols 3-6 (12 px)
    b = torch.ones(8, 8, dtype=torch.long)
    b[:, :2] = 2
    return [a, b]


def test_list_regions_and_paint():
    maps = two_maps()
    regs = R.list_regions(maps)
    assert regs.image.tolist() == [0, 0, 1, 1] and regs.region.tolist() == [0, 4, 1, 2]
    assert regs.area.tolist() == [52, 12, 48, 16]
    assert regs.box.tolist() == [[0, 0, 8, 8], [3, 2, 7, 5], [2, 0, 8, 8], [0, 0, 2, 8]]
    assert regs.per_image(3).tolist() == [2, 2, 0]
    painted = R.paint(maps, regs, torch.tensor([10, 11, 12, 13]))
    assert painted[0][3, 4] == 11 and painted[0][0, 0] == 10 and painted[1][0, 0] == 13 and painted[1][0, 5] == 12
    assert len(R.list_regions(maps, min_area=13)) == 3
    assert R.paint(maps, regs.select(regs.area > 20), torch.tensor([1, 2]), fill=7)[0][3, 4] == 7


def test_two_means_split():
    assert R.two_means_split(torch.tensor([1.0, 10.0, 2.0, 11.0])).tolist() == [False, True, False, True]
    assert R.two_means_split(torch.tensor([0.0, 0.0, 9.0])).tolist() == [False, False, True]
    assert R.two_means_split(torch.tensor([1.0, 2.0, 3.0, 100.0])).tolist() == [False, False, False, True]
    assert R.two_means_split(torch.tensor([5.0])).tolist() == [True]
    assert R.two_means_split(torch.tensor([2.0, 2.0])).tolist() == [True, True]


def test_foreground_scores_and_detection():
    maps = [torch.tensor([[0, 0], [1, 1]]).repeat_interleave(4, 0).repeat_interleave(4, 1)]   # 8x8, halves
    attn = torch.zeros(1, 2, 2, 2)
    attn[0, 0] = torch.tensor([[1.0, 1.0], [3.0, 3.0]])
    attn[0, 1] = torch.tensor([[2.0, 2.0], [0.5, 0.5]])           # min over heads: top 1, bottom 0.5
    assert torch.equal(R.min_head_attention(attn)[0], torch.tensor([[1.0, 1.0], [0.5, 0.5]]))
    regs = R.list_regions(maps)
    scores = R.foreground_scores(attn, maps, regs)
    assert scores[0] > scores[1] and scores.sum().item() == pytest.approx(32 * 1.0 + 32 * 0.5, rel=0.05)
    regs.score = torch.tensor([5.0, 1.0, 0.5, 7.0, 3.0, 9.0])
    regs.image = torch.tensor([0, 0, 0, 1, 1, 2])
    regs.region = torch.arange(6)
    assert R.detect_foreground(regs).tolist() == [True, False, False, True, False, True]


def test_head_reduction_rules_pick_different_foreground():
    # two regions (top / bottom halves); head 0 sees the top, head 1 the bottom strongly and the top weakly
    maps = [torch.tensor([[0, 0], [1, 1]]).repeat_interleave(4, 0).repeat_interleave(4, 1)]
    attn = torch.zeros(1, 2, 2, 2)
    attn[0, 0] = torch.tensor([[1.0, 1.0], [0.1, 0.1]])
    attn[0, 1] = torch.tensor([[0.6, 0.6], [3.0, 3.0]])
    regs = R.list_regions(maps)
    assert torch.equal(R.head_reduced_attention(attn, "max")[0], torch.tensor([[1.0, 1.0], [3.0, 3.0]]))
    assert torch.allclose(R.head_reduced_attention(attn, "mean")[0], torch.tensor([[0.8, 0.8], [1.55, 1.55]]))
    # min: top 0.6 vs bottom 0.1 -> top; max: 1.0 vs 3.0 -> bottom; mean: 0.8 vs 1.55 -> bottom
    flags = {rule: R.foreground_by_rule(attn, maps, regs, rule)[1].tolist() for rule in R.FOREGROUND_RULES}
    assert flags == {"min-head": [True, False], "max-head": [False, True], "mean-head": [False, True],
                     "all": [True, True]}
    with pytest.raises(ValueError, match="max-head"):
        R.foreground_by_rule(attn, maps, regs, "median-head")


def test_majority_labels_ignore_unlabelled_pixels():
    maps = two_maps()
    gt_a = torch.full((8, 8), 255)
    gt_a[2:5, 3:7] = 3
    gt_b = torch.zeros(8, 8, dtype=torch.long)
    gt_b[:, :5] = 1                                               # region 1 (cols 2-7): 18 px of 1, 30 of 0
    regs = R.list_regions(maps)
    assert R.majority_labels(maps, [gt_a, gt_b], regs, 4).tolist() == [-1, 3, 0, 1]


class FakeBackbone:
    """Records what ``extract`` sees; its CLS token is the mean colour of the normalised crop."""

    name, patch_size, dim = "fake", 8, 3

    def __init__(self):
        self.mean = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1)
        self.std = torch.tensor([0.2, 0.2, 0.2]).view(1, 3, 1, 1)
        self.seen = []

    def extract(self, images):
        x = (images - self.mean) / self.std
        self.seen.append(x)
        return SimpleNamespace(cls=x.mean((2, 3)))


def test_region_embeddings_crop_resize_and_mask_after_normalisation():
    image = torch.zeros(3, 16, 16)
    image[:, 4:8, 8:16] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)     # red block = region 1
    maps = [torch.zeros(16, 16, dtype=torch.long)]
    maps[0][4:8, 8:16] = 1
    regs = R.list_regions(maps)
    bb = FakeBackbone()
    emb = R.region_embeddings(bb, [image], maps, regs, size=8, progress=False)
    assert emb.shape == (2, 3)
    x = torch.cat(bb.seen)
    # region 1: its box is exactly the red block: the whole crop is red after resizing
    red = (torch.tensor([1.0, 0.0, 0.0]) - bb.mean.view(3)) / bb.std.view(3)
    assert torch.allclose(x[1], red.view(3, 1, 1).expand(3, 8, 8), atol=1e-5)
    # region 0 (box = the whole image): black where region 0 is, exactly 0 after normalisation on the red block
    assert torch.allclose(x[0][:, 2:4, 4:8], torch.zeros(3, 2, 4), atol=1e-6)
    black = (-bb.mean.view(3) / bb.std.view(3)).view(3, 1)
    assert torch.allclose(x[0][:, 0, :], black.expand(3, 8), atol=1e-5)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        R.region_embeddings(bb, [image], maps, regs, size=12, progress=False)


def clustered_split():
    """6 images of 4x4: left half background (region 0), right half one object (region 1) of class 1 or 2; region
    embeddings point along the class axis, background along a third axis."""
    maps, gts, emb, fg = [], [], [], []
    for n in range(6):
        cls = 1 + n % 2
        m = torch.zeros(4, 4, dtype=torch.long)
        m[:, 2:] = 1
        maps.append(m)
        gts.append(m * cls)
        emb += [torch.tensor([0.0, 0.0, 1.0]), torch.eye(3)[cls - 1] + 0.05 * n]
        fg += [False, True]
    regs = R.list_regions(maps)
    regs.embedding = torch.stack(emb)
    regs.foreground = torch.tensor(fg)
    return maps, gts, regs


def test_kmeans_table_perfect_on_separable_regions():
    maps, gts, regs = clustered_split()
    table = R.kmeans_table(regs, maps, gts, n_classes=3, seeds=range(4))
    assert table.miou.tolist() == [1.0] * 4
    summary = table.summary()
    assert summary["miou_mean"] == 1.0 and summary["miou_std"] == 0.0 and summary["seeds"] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="foreground regions"):
        R.kmeans_table(regs, maps, gts, n_classes=3, n_fg_classes=7, seeds=[0])


def test_weighted_knn_uses_similarity_weights():
    gallery = torch.tensor([[1.0, 0.0], [0.3, 1.0], [0.3, 1.0]])
    labels = torch.tensor([1, 0, 0])
    q = torch.tensor([[1.0, 0.05]])
    # k=3: class 1 has one very similar neighbour (cos ~1.0), class 0 two weak ones (cos ~0.33 each) -> class 1
    # (a plain majority vote would say 0)
    assert R.knn_classify(gallery, labels, q, 3, 2).tolist() == [1]
    far = torch.tensor([[0.0, 1.0]])
    assert R.knn_classify(gallery, labels, far, 1, 2).tolist() == [0]


def test_knn_table_perfect_and_labels_from_overlap():
    maps, gts, regs = clustered_split()
    regs.label = R.majority_labels(maps, gts, regs, 3)
    assert regs.label.tolist() == [0, 1, 0, 2, 0, 1, 0, 2, 0, 1, 0, 2]
    train, test = regs.select(regs.image < 4), regs.select(regs.image >= 4)
    test.image = test.image - 4
    table = R.knn_table(train, test, maps[4:], gts[4:], n_classes=3, ks=(1, 3))
    assert table[1].miou == 1.0 and table[1].pixel_acc == 1.0 and set(table) == {1, 3}


def test_region_count_correlation():
    maps, gts = [], []
    for n in range(1, 5):                                         # image n: n classes and n regions
        m = (torch.arange(8) * n // 8).view(1, 8).expand(8, 8)
        maps.append(m)
        gts.append(m.clone())
    out = R.region_count_correlation(maps, gts)
    assert out["pearson"] == pytest.approx(1.0) and out["spearman"] == pytest.approx(1.0)
    assert out["n_regions"] == [1, 2, 3, 4] and out["mean_regions_by_gt_classes"][3] == 3.0
    assert math.isnan(R.region_count_correlation(maps[:1], gts[:1])["pearson"])


def test_retrieval_figure_draws_queries_and_neighbours():
    maps, gts, regs = clustered_split()
    regs.label = R.majority_labels(maps, gts, regs, 3)
    images = [torch.rand(3, 4, 4) for _ in maps]
    side = {"regions": regs, "images": images, "maps": maps}
    fig = R.retrieval_figure(side, side, title="test (fake backbone)", k=3, n_queries=2,
                             class_names=["bg", "a", "b"])
    assert len(fig.axes) == 2 * 4
    with pytest.raises(ValueError, match="title"):
        R.retrieval_figure(side, side, title="")
