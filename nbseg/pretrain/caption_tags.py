"""Weak supervision from captions: how nbseg trains its *default* embedded backbone. This is NOT DINO.

Why it exists: 23 self-supervised runs (DINO, iBOT, cross-view, Sinkhorn, colour tables, dense InfoNCE, MAE; GPU
and CPU) did not give the world's small ViT features near DINO's on real images within the compute nbseg is built
on (see the model card's learning curves). Part of the literature stands CLIP or a supervised ImageNet ViT in for
DINO; nbseg does the same, from the world's *captions*: each image's tags are the class nouns its captions name
(synonyms included). The pixel labels are never read.

The objective, for tags y in {0, 1}^C (C classes) of which the thing classes T are a subset:

* CLS token:  l_cls = W_cls LN(z_cls), a multi-label logistic loss over the **thing** tags only
  (BCE(l_cls[T], y[T])), so the CLS token (and with it the last block's CLS attention, the saliency probe) has to
  find the objects the caption names;
* patch tokens: per-patch class scores s_{c,p} = W_patch z_p, pooled per class by log-sum-exp
  (Pinheiro & Collobert, CVPR 2015):  S_c = (1/r) log( (1/P) sum_p exp(r s_{c,p}) ),
  and a multi-label logistic loss over **all** tags, BCE(S, y); the patch tokens the probes read must then say
  which class is where (multiple-instance learning: a tag is present iff some patches score it);
* attention MIL over things (Ilse et al., ICML 2018, with the ViT's own attention as the pooling weights):
  with a_p the last block's head-mean CLS attention over patches (renormalised to sum to 1 over P; the very map
  the saliency probe reads),  A_c = sum_p a_p s_{c,p}  and  BCE(A[T], y[T]). A thing tag can only be explained
  when the CLS token *looks at* the patches that score it, so the attention has to land on the named objects;
  without this term the CLS head can read "ball" from anywhere in the token mixture and the attention map stays
  diffuse (measured: saliency 0.19 without it, see the model card);
* attention from the thing map: the patch head's own map of the tagged things, m_p = max_{c in T, y_c = 1}
  sigmoid(s_{c,p}), normalised to t = m / sum_p m and detached, is the target of the same attention:
  H(t, a) = -sum_p t_p log a_p. Attention MIL alone made the attention *peaky* (it only needs the single best
  patch of each thing), so a mass fraction of it covered a sliver of each object (saliency 0.13); the thing map
  covers the objects (0.44 on the same checkpoint), and a saliency probe keeps the patches holding 60% of the
  attention's mass, so the attention must spread over the objects the way the map does;
* patch self-training (stage 3 of the default backbone): each patch's pseudo-label is the arg-max of its scores
  over the image's *tags*, q_p = softmax_{c: y_c = 1}(s_{c,p}) (detached), kept where max_c q_{c,p} >= tau_st, and
  the patch scores are trained by cross-entropy over all C classes to it:
  L_st = mean over kept patches of -log softmax_c(s_{.,p})[argmax q_p]. The pooled MIL loss only needs the best
  patches of each tag; this term asks *every* confidently placed patch to say its class (on world/val the v3
  head's tagged arg-max is right on 66% of patches, 83% of those with q >= 0.9, which keep 56%);
* total loss  L = BCE(l_cls[T], y[T]) + BCE(S, y) + w_mil BCE(A[T], y[T]) + w_att H(t, a) + w_st L_st.

The heads are dropped on export: the exported file holds the ViT alone, like ``nbseg pretrain export``.

    nbseg pretrain-tags RUN_DIR [--config FILE] [key=value ...]     # resumable (rerun the same command)
    nbseg pretrain-tags export RUN_DIR OUT_FILE [--fp16]
"""
from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nbseg.backbones import cls_attention_from_qkv, create_model, load_state_into, read_weights_file
from nbseg.data.base import read_id_list, read_image
from nbseg.errors import ConfigError, DataError, NbsegError
from nbseg.io import atomic_write_bytes
from nbseg.train import TrainConfig, fit
from nbseg.train.checkpoint import CHECKPOINT

SOURCE = "weakly supervised by captions (image-level tags from caption nouns), not DINO"


# ----------------------------------------------------------------------------------------------------------
# Tags from captions
# ----------------------------------------------------------------------------------------------------------

def tag_patterns(synonyms: dict[str, list[str]], class_names: list[str]) -> list[re.Pattern]:
    """One regular expression per class (in ``class_names`` order) matching any of its synonyms as whole words."""
    patterns = []
    for name in class_names:
        words = sorted(synonyms.get(name, [name]), key=len, reverse=True)
        patterns.append(re.compile(r"\b(" + "|".join(re.escape(w.lower()) for w in words) + r")\b"))
    return patterns


def tags_from_captions(captions: list[str], patterns: list[re.Pattern]) -> torch.Tensor:
    """(C,) float 0/1: class c is tagged when any caption names it (any synonym, whole words, any case)."""
    text = " | ".join(c.lower() for c in captions)
    return torch.tensor([1.0 if p.search(text) else 0.0 for p in patterns])


def read_captions(path: Path) -> dict[str, list[str]]:
    """``captions.jsonl`` (one ``{"id", "captions"}`` object a line) as {image id: captions}."""
    if not path.is_file():
        raise DataError(f"captions file {path} is missing. Fix: regenerate the world root with `nbseg world`, or "
                        "give data_root a folder whose captions.jsonl lists every image's captions")
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out[str(row["id"])] = [str(c) for c in row["captions"]]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f"{path}, line {n}: not a {{\"id\", \"captions\"}} JSON object ({err})") from err
    return out


# ----------------------------------------------------------------------------------------------------------
# Data: images of a world-layout root with their caption tags (the pixel labels are never opened)
# ----------------------------------------------------------------------------------------------------------

def _augment(image: torch.Tensor, size: int, scale: tuple[float, float], jitter: float,
             g: torch.Generator) -> torch.Tensor:
    """Random resized crop (area fraction in ``scale``, aspect 3/4..4/3) to ``size``, horizontal flip, and
    brightness / contrast / saturation jitter of strength ``jitter`` (no hue shift: colour is class evidence).
    ``image`` (3, H, W) in [0, 1]; every draw comes from ``g``."""
    return augment_with_box(image, size, scale, jitter, g)[0]


def augment_with_box(image: torch.Tensor, size: int, scale: tuple[float, float], jitter: float,
                     g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """:func:`_augment`, also returning the crop's box (4,) ``(x0, y0, x1, y1)`` in ``image`` pixels and whether
    it was flipped (what a teacher's whole-image maps need to be cropped the same way)."""
    _, H, W = image.shape
    u = torch.rand(6, generator=g)
    area = (scale[0] + (scale[1] - scale[0]) * u[0].item()) * H * W
    aspect = float(torch.exp(torch.log(torch.tensor(0.75)) + u[1] * (torch.log(torch.tensor(4 / 3))
                                                                      - torch.log(torch.tensor(0.75)))))
    h = int(round(min(H, (area / aspect) ** 0.5)))
    w = int(round(min(W, (area * aspect) ** 0.5)))
    top = int(u[2].item() * (H - h + 1))
    left = int(u[3].item() * (W - w + 1))
    crop = image[:, top:top + h, left:left + w]
    crop = F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    flipped = bool(u[4] < 0.5)
    if flipped:
        crop = crop.flip(-1)
    if jitter > 0:
        b, c, s = (1 + jitter * (2 * torch.rand(3, generator=g) - 1)).tolist()
        crop = crop * b
        mean = crop.mean()
        crop = (crop - mean) * c + mean
        grey = crop.mean(0, keepdim=True)
        crop = (crop - grey) * s + grey
    box = torch.tensor([left, top, left + w, top + h], dtype=torch.float32)
    return crop.clamp(0, 1), box, flipped


class CaptionTagImages(torch.utils.data.Dataset):
    """Images of a world-layout root (``JPEGImages/``, ``ImageSets/Segmentation/<split>.txt``,
    ``captions.jsonl``) with their tags. Indexed by ``(index, seed)`` as :func:`nbseg.train.fit` asks."""

    def __init__(self, root: Path, split: str, class_names: list[str], synonyms: dict[str, list[str]], *,
                 size: int, scale: tuple[float, float], jitter: float):
        self.root, self.split, self.name = Path(root), split, f"world-captions/{split}"
        self.ids = read_id_list(self.root / "ImageSets" / "Segmentation" / f"{split}.txt")
        captions = read_captions(self.root / "captions.jsonl")
        missing = [i for i in self.ids if i not in captions]
        if missing:
            raise DataError(f"{self.root / 'captions.jsonl'} has no captions for {len(missing)} images of the "
                            f"{split} split (e.g. {missing[0]}). Fix: regenerate the root with `nbseg world`")
        patterns = tag_patterns(synonyms, class_names)
        self.tags = torch.stack([tags_from_captions(captions[i], patterns) for i in self.ids])   # (N, C)
        self.size, self.scale, self.jitter = size, scale, jitter

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = item
        image = read_image(self.root / "JPEGImages" / f"{self.ids[index]}.png")
        g = torch.Generator().manual_seed(int(seed))
        return _augment(image, self.size, self.scale, self.jitter, g), self.tags[index]


# ----------------------------------------------------------------------------------------------------------
# The model and its losses
# ----------------------------------------------------------------------------------------------------------

def lse_pool(scores: torch.Tensor, r: float) -> torch.Tensor:
    """Log-sum-exp pooling over patches: (B, P, C) -> (B, C), S_c = (1/r) log((1/P) sum_p exp(r s_{c,p})).

    r -> 0 gives the mean over patches, r -> inf the maximum (Pinheiro & Collobert, 2015)."""
    P = scores.shape[1]
    return (torch.logsumexp(r * scores, dim=1) - torch.log(torch.tensor(float(P)))) / r


def attention_pool(scores: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """Attention MIL pooling: (B, P, C) scores and (B, P) non-negative weights -> (B, C),
    A_c = sum_p a_p s_{c,p} with a renormalised to sum to 1 over P."""
    weights = attention / attention.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return torch.einsum("bp,bpc->bc", weights, scores)


def thing_map_target(patch_scores: torch.Tensor, tags: torch.Tensor, thing_mask: torch.Tensor) -> torch.Tensor:
    """The attention target t of the module docstring: (B, P, C) scores, (B, C) tags -> (B, P), rows summing to 1,
    t_p proportional to max over the tagged things c of sigmoid(s_{c,p}); uniform for an image with no thing tag.
    Detached: the attention follows the map, the map is trained by the tag losses only."""
    probs = torch.sigmoid(patch_scores.detach()[:, :, thing_mask]) * tags[:, None, thing_mask]
    m = probs.amax(dim=-1)                                                       # (B, P)
    m = torch.where(m.sum(1, keepdim=True) > 0, m, torch.ones_like(m))
    return m / m.sum(dim=1, keepdim=True)


def attention_cross_entropy(target: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """H(t, a) = -sum_p t_p log a_p averaged over the batch; (B, P) target rows sum to 1, (B, P) attention is
    renormalised to sum to 1 over P."""
    a = attention / attention.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return -(target * a.clamp_min(1e-12).log()).sum(dim=1).mean()


def patch_pseudo_labels(patch_scores: torch.Tensor, tags: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, P, C) scores, (B, C) tags -> (B, P) long: the arg-max of each patch's scores over its image's tags,
    q_p = softmax over the tagged classes; -1 (ignored) where max q_p < ``threshold`` or the image has no tag."""
    untagged = tags[:, None, :] <= 0                                             # (B, 1, C)
    q = patch_scores.detach().masked_fill(untagged, float("-inf")).softmax(dim=-1)
    confidence, labels = q.nan_to_num(0.0).max(dim=-1)                            # an untagged image gives NaN rows
    keep = (confidence >= threshold) & (tags.sum(dim=1, keepdim=True) > 0)
    return torch.where(keep, labels, torch.full_like(labels, -1))


def patch_self_training_loss(patch_scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_st: cross-entropy of (B, P, C) scores (softmax over all C) to (B, P) pseudo-labels, -1 ignored;
    0 (with a gradient path) when every patch is ignored."""
    if (labels < 0).all():
        return patch_scores.sum() * 0.0
    return F.cross_entropy(patch_scores.flatten(0, 1), labels.flatten(), ignore_index=-1)


def caption_tag_loss(cls_logits: torch.Tensor, patch_scores: torch.Tensor, tags: torch.Tensor,
                     thing_mask: torch.Tensor, r: float, attention: torch.Tensor | None = None,
                     mil_weight: float = 0.0, attention_weight: float = 0.0, self_training_weight: float = 0.0,
                     self_training_threshold: float = 0.9) -> dict[str, torch.Tensor]:
    """The total loss of the module docstring and its terms.

    cls_logits (B, C), patch_scores (B, P, C), tags (B, C) in {0, 1}, thing_mask (C,) bool, attention (B, P)
    the head-mean CLS attention over patches (needed when ``mil_weight`` or ``attention_weight`` > 0)."""
    if (mil_weight > 0 or attention_weight > 0) and attention is None:
        raise ValueError("mil_weight > 0 or attention_weight > 0 needs the CLS attention")
    l_cls = F.binary_cross_entropy_with_logits(cls_logits[:, thing_mask], tags[:, thing_mask])
    l_patch = F.binary_cross_entropy_with_logits(lse_pool(patch_scores, r), tags)
    out = {"loss": l_cls + l_patch, "cls_bce": l_cls.detach(), "patch_bce": l_patch.detach()}
    if mil_weight > 0:
        pooled = attention_pool(patch_scores[:, :, thing_mask], attention)
        l_mil = F.binary_cross_entropy_with_logits(pooled, tags[:, thing_mask])
        out["loss"] = out["loss"] + mil_weight * l_mil
        out["mil_bce"] = l_mil.detach()
    if attention_weight > 0:
        l_att = attention_cross_entropy(thing_map_target(patch_scores, tags, thing_mask), attention)
        out["loss"] = out["loss"] + attention_weight * l_att
        out["attention_ce"] = l_att.detach()
    if self_training_weight > 0:
        labels = patch_pseudo_labels(patch_scores, tags, self_training_threshold)
        l_st = patch_self_training_loss(patch_scores, labels)
        out["loss"] = out["loss"] + self_training_weight * l_st
        out["self_training_ce"] = l_st.detach()
        out["self_training_kept"] = (labels >= 0).float().mean()
    return out


class CaptionTagNet(nn.Module):
    """A timm ViT with a CLS tag head and a per-patch tag head (the heads exist for training only). The last
    block's fused ``qkv`` output is captured by a hook so the CLS attention (with gradients) feeds the MIL term."""

    def __init__(self, arch: str, n_classes: int, thing_mask: torch.Tensor, *, drop_path_rate: float, r: float,
                 mil_weight: float = 0.0, attention_weight: float = 0.0, self_training_weight: float = 0.0,
                 self_training_threshold: float = 0.9):
        super().__init__()
        self.backbone = create_model(arch, num_classes=0, drop_path_rate=drop_path_rate)
        dim = self.backbone.embed_dim
        self.cls_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, n_classes))
        self.patch_head = nn.Linear(dim, n_classes)
        self.register_buffer("thing_mask", thing_mask.bool(), persistent=False)
        self.r, self.mil_weight, self.attention_weight = r, mil_weight, attention_weight
        self.self_training_weight, self.self_training_threshold = self_training_weight, self_training_threshold
        self._qkv: torch.Tensor | None = None
        self.backbone.blocks[-1].attn.qkv.register_forward_hook(self._capture_qkv)

    def _capture_qkv(self, module, inputs, output) -> None:
        self._qkv = output

    def cls_attention(self) -> torch.Tensor:
        """(B, P) head-mean CLS attention over patches of the last forward pass (the saliency probe's map)."""
        attn_mod = self.backbone.blocks[-1].attn
        qn = attn_mod.q_norm if not isinstance(attn_mod.q_norm, nn.Identity) else None
        kn = attn_mod.k_norm if qn is not None else None
        attn = cls_attention_from_qkv(self._qkv, attn_mod.num_heads, attn_mod.scale,
                                      self.backbone.num_prefix_tokens, qn, kn)      # (B, heads, P)
        return attn.mean(dim=1)

    @staticmethod
    def normalise(images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> ImageNet-normalised, as the ViT reads them."""
        mean = torch.tensor((0.485, 0.456, 0.406), device=images.device).view(1, 3, 1, 1)
        std = torch.tensor((0.229, 0.224, 0.225), device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) in [0, 1] -> CLS logits (B, C), patch scores (B, P, C)."""
        cls_logits, patch_scores, _ = self.forward_with_tokens(images)
        return cls_logits, patch_scores

    def forward_with_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`forward` plus the patch tokens (B, P, D) after the final norm (what the probes read)."""
        tokens = self.backbone.forward_features(self.normalise(images))     # (B, 1 + P, D), after the final norm
        patches = tokens[:, self.backbone.num_prefix_tokens:]
        return self.cls_head(tokens[:, 0]), self.patch_head(patches), patches

    def training_step(self, batch, step: int) -> dict[str, torch.Tensor]:
        images, tags = batch
        cls_logits, patch_scores = self(images)
        attention = self.cls_attention() if self.mil_weight > 0 or self.attention_weight > 0 else None
        # drop the captured activation: it holds the graph, and a module holding a non-leaf tensor cannot be
        # deep-copied (the learning-curve probe copies the ViT, whose hook refers back to this module)
        self._qkv = None
        return caption_tag_loss(cls_logits, patch_scores, tags, self.thing_mask, self.r, attention,
                                self.mil_weight, self.attention_weight, self.self_training_weight,
                                self.self_training_threshold)


@dataclass
class CaptionTagConfig(TrainConfig):
    """Weak supervision by caption tags (module docstring). Defaults are sized for a 2-core CPU (world v2)."""

    data_root: str | None = None         # a world-layout root with captions.jsonl (None: the default world)
    split: str = "train"
    arch: str = "nbseg_vit_tiny_convstem_patch8"   # the conv-stem ViT learns texture fast enough for a CPU
    drop_path_rate: float = 0.1
    image_size: int = 96
    crop_scale: tuple[float, float] = (0.6, 1.0)   # random resized crop; small crops would drop tagged objects
    colour_jitter: float = 0.3
    lse_r: float = 4.0                   # log-sum-exp sharpness of the patch pooling
    mil_weight: float = 0.0              # weight of the attention-MIL term over things (0: off; see the card)
    attention_weight: float = 1.0        # weight of the attention-from-thing-map term (0: off)
    self_training_weight: float = 0.0    # weight of the patch self-training term (0: off; stage 3 of the default)
    self_training_threshold: float = 0.9  # keep a patch's pseudo-label when its tagged softmax reaches this
    teacher_momentum: float = 0.0        # > 0: stage 4, an EMA teacher on the whole image labels the crops
                                         # (nbseg.pretrain.tag_teacher; self_training_weight weighs its CE)
    teacher_keep_fraction: float = 0.5   # stage 4: per class, the most confident share of its patches kept
    attention_target_smoothing: float = 0.5  # stage 4: attention target mass spread uniformly (eps)
    separation_weight: float = 0.0       # stage 4: weight of the within-image class separation term (0: off)
    separation_temperature: float = 0.1  # its softmax temperature over the image's class centres
    init_weights: str | None = None      # warm start: a weights file for the ViT, the whole net's state dict, or a
                                         # previous stage's run folder (its final checkpoint)
    epochs: int = 12
    batch_size: int = 64
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    clip_grad: float = 3.0
    checkpoint_every: int = 25

    def validate(self) -> None:
        super().validate()
        if self.image_size % 8:
            raise ConfigError(f"image_size must be a multiple of the patch size 8, got {self.image_size}")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ConfigError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if self.lse_r <= 0:
            raise ConfigError(f"lse_r must be > 0, got {self.lse_r}")
        if self.mil_weight < 0 or self.attention_weight < 0:
            raise ConfigError(f"mil_weight and attention_weight must be >= 0, got {self.mil_weight}, "
                              f"{self.attention_weight}")
        if self.self_training_weight < 0 or not 0 <= self.self_training_threshold < 1:
            raise ConfigError(f"self_training_weight must be >= 0 and self_training_threshold in [0, 1), got "
                              f"{self.self_training_weight}, {self.self_training_threshold}")
        if not 0 <= self.teacher_momentum < 1 or not 0 < self.teacher_keep_fraction <= 1 \
                or not 0 <= self.attention_target_smoothing <= 1:
            raise ConfigError("teacher_momentum must be in [0, 1), teacher_keep_fraction in (0, 1] and "
                              f"attention_target_smoothing in [0, 1], got {self.teacher_momentum}, "
                              f"{self.teacher_keep_fraction}, {self.attention_target_smoothing}")
        if self.separation_weight < 0 or self.separation_temperature <= 0:
            raise ConfigError(f"separation_weight must be >= 0 and separation_temperature > 0, got "
                              f"{self.separation_weight}, {self.separation_temperature}")
        if self.separation_weight > 0 and self.teacher_momentum <= 0:
            raise ConfigError("separation_weight needs the stage-4 teacher's labels: set teacher_momentum > 0")
        if self.teacher_momentum > 0 and self.mil_weight > 0:
            raise ConfigError("the stage-4 teacher (teacher_momentum > 0) does not take the attention-MIL term: "
                              "set mil_weight=0")


def build(cfg: CaptionTagConfig) -> tuple[CaptionTagNet, CaptionTagImages]:
    """The network and the tagged training images of ``cfg`` (a world-layout root)."""
    from nbseg.data.world import read_class_table, resolve_world_root
    from nbseg.world import SYNONYMS, ensure_world

    root = ensure_world() if cfg.data_root is None else resolve_world_root(cfg.data_root)
    table = read_class_table(Path(root))["full"]
    names, is_thing = table["names"], torch.tensor(table["is_thing"])
    torch.manual_seed(cfg.seed)
    if cfg.teacher_momentum > 0:
        from nbseg.pretrain.tag_teacher import CaptionTagViews, TeacherTagNet

        data = CaptionTagViews(Path(root), cfg.split, names, SYNONYMS, size=cfg.image_size, scale=cfg.crop_scale,
                               jitter=cfg.colour_jitter)
        net = TeacherTagNet(cfg.arch, len(names), is_thing, drop_path_rate=cfg.drop_path_rate, r=cfg.lse_r,
                            attention_weight=cfg.attention_weight, self_training_weight=cfg.self_training_weight,
                            momentum=cfg.teacher_momentum, keep_fraction=cfg.teacher_keep_fraction,
                            target_smoothing=cfg.attention_target_smoothing,
                            separation_weight=cfg.separation_weight,
                            separation_temperature=cfg.separation_temperature)
        if cfg.init_weights:
            warm_start(net, cfg.init_weights)
            net.sync_teacher()
        return net, data
    data = CaptionTagImages(Path(root), cfg.split, names, SYNONYMS, size=cfg.image_size, scale=cfg.crop_scale,
                            jitter=cfg.colour_jitter)
    net = CaptionTagNet(cfg.arch, len(names), is_thing, drop_path_rate=cfg.drop_path_rate, r=cfg.lse_r,
                        mil_weight=cfg.mil_weight, attention_weight=cfg.attention_weight,
                        self_training_weight=cfg.self_training_weight,
                        self_training_threshold=cfg.self_training_threshold)
    if cfg.init_weights:
        warm_start(net, cfg.init_weights)
    return net, data


def warm_start(net: CaptionTagNet, path: str | Path) -> None:
    """Load a weights file into ``net``: the ViT (an export, or any file ``read_weights_file`` takes) and, when
    the file holds them (a state dict of a whole :class:`CaptionTagNet`, or a ``nbseg pretrain-tags`` run folder,
    whose final checkpoint is read), the two heads too. Read with the safe loader; a file of another architecture is
    refused with the keys that do not fit."""
    if Path(path).is_dir():                  # a previous stage's run folder: its checkpoint's trainable state
        from nbseg.train.checkpoint import load_checkpoint
        state = load_checkpoint(path)["trainable"]
        state = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in state.items()}
    else:
        state = read_weights_file(path)      # strips "backbone." and the like
    state = {k: v for k, v in state.items() if not k.startswith("teacher.")}   # a stage-4 net's EMA teacher
    heads = {k: v for k, v in state.items() if k.startswith(("cls_head.", "patch_head."))}
    load_state_into(net.backbone, {k: v for k, v in state.items() if k not in heads}, str(path))
    if heads:
        missing, unexpected = nn.Module.load_state_dict(
            nn.ModuleDict({"cls_head": net.cls_head, "patch_head": net.patch_head}), heads, strict=False)
        if missing or unexpected:
            raise NbsegError(f"{path}: the tag heads do not fit this world's classes (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}); pass a backbone export instead")


def _collate(items):
    images, tags = zip(*items)
    return torch.stack(images), torch.stack(tags)


def pretrain_tags(cfg: CaptionTagConfig, run_dir: str | Path, *, progress: bool = True,
                  quality=None) -> dict:
    """Train (or resume) a caption-tag run in ``run_dir`` through :func:`nbseg.train.fit`.

    ``quality(backbone) -> dict``, if given, is measured at every epoch end into ``metrics.csv`` (learning curves;
    :func:`nbseg.pretrain.quality.backbone_quality` with a few val images is the one the CLI uses).
    """
    net, data = build(cfg)
    evaluate = None
    if quality is not None:
        def evaluate(method):
            return quality(method.backbone)
    collate = _collate
    if cfg.teacher_momentum > 0:
        from nbseg.pretrain.tag_teacher import collate_views as collate
    return fit(net, data, cfg, run_dir, collate_fn=collate, progress=progress, evaluate=evaluate)


def export_backbone(run_dir: str | Path, out_file: str | Path, fp16: bool = False, *, overwrite: bool = False
                    ) -> Path:
    """Write the trained ViT (heads dropped) as a weights file for ``nbseg.backbones.load(ARCH, weights=...)``.

    Holds ``{"arch", "state_dict", "meta"}``; ``meta["source"]`` says it is weakly supervised by captions. An
    existing ``out_file`` is kept unless ``overwrite``."""
    from nbseg.io import check_outputs
    from nbseg.train.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise NbsegError(f"{run_dir} has no {CHECKPOINT}: is it a `nbseg pretrain-tags` run folder?")
    check_outputs([out_file], inputs=[path], overwrite=overwrite, what="weights file")
    state = load_checkpoint(path)
    if state["kind"] not in ("CaptionTagNet", "TeacherTagNet"):   # stages 1-3, stage 4 (the student is exported)
        raise NbsegError(f"{path} is a checkpoint of {state['kind']!r}, not of a `nbseg pretrain-tags` run: export "
                         "it with its own command")
    config = state.get("config", {})
    weights = {k[len("backbone."):]: v for k, v in state["trainable"].items() if k.startswith("backbone.")}
    if fp16:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    meta = {"arch": config.get("arch"), "step": state.get("step"), "config": config, "source": SOURCE}
    buf = io.BytesIO()
    torch.save({"arch": config.get("arch"), "state_dict": weights, "meta": meta}, buf)
    return atomic_write_bytes(out_file, buf.getvalue())
