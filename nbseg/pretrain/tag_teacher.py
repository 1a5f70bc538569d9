"""Stage 4 of the default embedded backbone: a mean teacher sees the whole image and labels the student's crops.
Weak supervision by captions (:mod:`nbseg.pretrain.caption_tags`), NOT DINO.

Why (measured on world/val with the stage-3 net, ``runs/diag`` in the model card's notes):

* stage 3 took each patch's label from the *same* view it trained, so its cross-entropy fell to 0.005 within one
  epoch: the head agreed with itself and stopped teaching;
* its labels were the arg-max of the raw patch scores over the tagged classes. The scores come from independent
  sigmoid heads, calibrated per class and not across classes, so the broad stuff classes out-voted the small things:
  the stage-3 head calls 1.1% of the patches a thing where 28% are (thing-mask IoU 0.03, from 0.48 before stage 3).
  Standardising each class's scores over the image's patches first (compare a class with itself elsewhere in the
  image) gives 65.7% right labels and thing IoU 0.46 on the same net.

The objective, for an image x with tags y (C classes, things T) and a crop x' of it (box b, flip f):

* teacher (an exponential moving average of the student's ViT and patch head, eval mode, no gradient) on the whole
  image: patch scores s (C, h, w); standardised per class over the image's patches,
  z_{c,p} = (s_{c,p} - mean_p s_{c,.}) / std_p s_{c,.};  cropped with b and f (RoI-align) to the crop's grid;
* labels l_p = argmax_{c: y_c = 1} z_{c,p}; confidence q_p = max_c softmax_{c: y_c = 1}(z_{.,p});
  class-balanced selection (Zou et al., ECCV 2018): of the patches of the batch labelled c, the ceil(rho n_c) most
  confident are kept, so every tagged class keeps the same share and none can take over;
* the crop's tags y'_c = y_c and (c labels some patch of the crop): a crop can cut a small thing out;
* student on the crop: BCE(CLS over things, y') + BCE(LSE-pooled patch scores, y') + w_st CE(s'_p, l_p) over kept
  patches + w_att H(t, a), with t = (1 - eps) m / sum_p m + eps / P, m_p the share of patch p that the teacher
  labels a tagged thing: the CLS attention is asked to put 1 - eps of its mass on the named objects, spread over
  them, and the rest anywhere (a saliency probe keeps the patches holding 60% of the mass);
* optionally (``separation_weight`` > 0; not part of v5): a within-image class separation term on the
  student's patch tokens (:func:`within_image_separation_loss`), for DCN's angle pattern;
* after every optimiser step  theta_teacher <- m theta_teacher + (1 - m) theta_student.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nbseg.backbones import create_model
from nbseg.data.base import read_image
from nbseg.data.crops import crop_maps
from nbseg.pretrain.caption_tags import (CaptionTagImages, CaptionTagNet, attention_cross_entropy, augment_with_box,
                                         lse_pool, patch_self_training_loss)
from nbseg.pretrain.dino import ema_update_


# ----------------------------------------------------------------------------------------------------------
# Pure functions
# ----------------------------------------------------------------------------------------------------------

def standardise_per_class(scores: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) scores -> z, each class standardised over the image's patches:
    z_{c,p} = (s_{c,p} - mean_p s_{c,.}) / std_p s_{c,.}  (std floored at 1e-6)."""
    flat = scores.flatten(2)
    z = (flat - flat.mean(-1, keepdim=True)) / flat.std(-1, keepdim=True).clamp_min(1e-6)
    return z.view_as(scores)


def tagged_labels(z: torch.Tensor, tags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, g, g) standardised scores, (B, C) tags -> labels (B, g, g) long, arg-max over the tagged classes, and
    their confidence (B, g, g), the largest softmax over the tagged classes; -1 and 0 for an image with no tag."""
    untagged = (tags <= 0)[:, :, None, None]
    q = z.masked_fill(untagged, float("-inf")).softmax(dim=1).nan_to_num(0.0)
    confidence, labels = q.max(dim=1)
    none = (tags.sum(1) <= 0)[:, None, None]
    return labels.masked_fill(none, -1), confidence.masked_fill(none, 0.0)


def class_balanced_keep(labels: torch.Tensor, confidence: torch.Tensor, fraction: float) -> torch.Tensor:
    """Bool mask like ``labels`` (any shape, -1 = no label): for each class c, the ceil(fraction n_c) patches
    labelled c with the highest confidence (ties at the cut are all kept)."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    for c in labels.unique():
        if c < 0:
            continue
        of_c = labels == c
        k = math.ceil(fraction * int(of_c.sum()))
        cut = confidence[of_c].topk(k).values[-1]
        keep |= of_c & (confidence >= cut)
    return keep


def crop_tags(labels: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
    """(B, g, g) crop labels (-1 none), (B, C) image tags -> (B, C): a tag stays when it labels a patch of the crop."""
    present = torch.zeros_like(tags)
    valid = labels >= 0
    rows = torch.arange(len(labels))[:, None, None].expand_as(labels)
    present[rows[valid], labels[valid]] = 1.0
    return tags * present


def within_image_separation_loss(tokens: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Class separation inside each image (an option of stage 4, for DCN's angle pattern): with x_p the
    L2-normalised patch tokens of one image and c_k the normalised mean of its patches labelled k,
    L = mean over labelled patches of images holding >= 2 classes of  -log softmax_k(x_p . c_k / T)[l_p]:
    each patch is pulled toward its class's centre *in its own image* and pushed from the other classes' centres
    there. tokens (B, P, D), labels (B, P) long (-1 ignored) -> scalar (0 with a gradient path when no image
    holds two classes)."""
    x = F.normalize(tokens, dim=-1)
    total, count = tokens.sum() * 0.0, 0
    for b in range(len(x)):
        keep = labels[b] >= 0
        classes, dense = labels[b][keep].unique(return_inverse=True)
        if len(classes) < 2:
            continue
        xb = x[b][keep]                                                          # (n, D)
        centres = torch.zeros(len(classes), x.shape[-1], dtype=x.dtype).index_add_(0, dense, xb)
        logits = xb @ F.normalize(centres, dim=-1).T / temperature               # (n, K)
        total = total + F.cross_entropy(logits, dense, reduction="sum")
        count += len(dense)
    return total / max(count, 1)


def smoothed_thing_target(thing_share: torch.Tensor, eps: float) -> torch.Tensor:
    """(B, P) share of each patch labelled a tagged thing -> attention target t (B, P), rows summing to 1:
    t = (1 - eps) m / sum_p m + eps / P; uniform where the crop holds no thing."""
    P = thing_share.shape[1]
    total = thing_share.sum(1, keepdim=True)
    m = torch.where(total > 0, thing_share / total.clamp_min(1e-12), torch.full_like(thing_share, 1.0 / P))
    return (1 - eps) * m + eps / P


# ----------------------------------------------------------------------------------------------------------
# Data and model
# ----------------------------------------------------------------------------------------------------------

class CaptionTagViews(CaptionTagImages):
    """Items ``(whole (3, S, S), crop (3, S, S), box (4,) in whole-view pixels, flipped (bool), tags (C,))``: the
    teacher's whole image (resized to ``size``) and the student's augmented crop of it."""

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        image = read_image(self.root / "JPEGImages" / f"{self.ids[index]}.png")
        g = torch.Generator().manual_seed(int(seed))
        crop, box, flipped = augment_with_box(image, self.size, self.scale, self.jitter, g)
        _, H, W = image.shape
        whole = image if (H, W) == (self.size, self.size) else F.interpolate(
            image[None], size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)[0]
        box = box * torch.tensor([self.size / W, self.size / H] * 2)
        return whole, crop, box, torch.tensor(flipped), self.tags[index]


def collate_views(items):
    return tuple(torch.stack(part) for part in zip(*items))


class TeacherTagNet(CaptionTagNet):
    """:class:`CaptionTagNet` (the student) plus an EMA teacher of its ViT and patch head (module docstring)."""

    def __init__(self, arch: str, n_classes: int, thing_mask: torch.Tensor, *, drop_path_rate: float, r: float,
                 attention_weight: float, self_training_weight: float, momentum: float, keep_fraction: float,
                 target_smoothing: float, separation_weight: float = 0.0, separation_temperature: float = 0.1):
        super().__init__(arch, n_classes, thing_mask, drop_path_rate=drop_path_rate, r=r,
                         attention_weight=attention_weight, self_training_weight=self_training_weight)
        self.teacher = nn.ModuleDict({"backbone": create_model(arch, num_classes=0, drop_path_rate=0.0),
                                      "patch_head": nn.Linear(self.backbone.embed_dim, n_classes)})
        self.teacher.requires_grad_(False)
        self.momentum, self.keep_fraction, self.target_smoothing = momentum, keep_fraction, target_smoothing
        self.separation_weight, self.separation_temperature = separation_weight, separation_temperature
        self.sync_teacher()

    def _student_parts(self) -> nn.ModuleDict:
        return nn.ModuleDict({"backbone": self.backbone, "patch_head": self.patch_head})

    @torch.no_grad()
    def sync_teacher(self) -> None:
        """teacher <- student (after a warm start)."""
        self.teacher.load_state_dict(self._student_parts().state_dict())

    @torch.no_grad()
    def teacher_scores(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> the teacher's patch scores (B, C, h, w), in eval mode."""
        self.teacher.eval()
        tokens = self.teacher["backbone"].forward_features(self.normalise(images))
        scores = self.teacher["patch_head"](tokens[:, self.teacher["backbone"].num_prefix_tokens:])   # (B, P, C)
        h = int(round(scores.shape[1] ** 0.5))
        return scores.transpose(1, 2).reshape(len(images), -1, h, h)

    def teacher_targets(self, whole, boxes, flipped, tags, grid: int) -> dict[str, torch.Tensor]:
        """The teacher's labels, kept mask, crop tags and thing share on the student's ``grid`` (module docstring)."""
        z = standardise_per_class(self.teacher_scores(whole))                      # (B, C, h, w)
        labels_whole, _ = tagged_labels(z, tags)
        thing = (self.thing_mask[labels_whole.clamp_min(0)] & (labels_whole >= 0)).float()[:, None]
        cropped = crop_maps(torch.cat([z, thing], 1), boxes, grid, whole.shape[-1])
        flip = flipped.view(-1, 1, 1, 1)
        cropped = torch.where(flip, cropped.flip(-1), cropped)
        labels, confidence = tagged_labels(cropped[:, :-1], tags)
        keep = class_balanced_keep(labels, confidence, self.keep_fraction)
        return {"labels": torch.where(keep, labels, torch.full_like(labels, -1)).flatten(1),
                "tags": crop_tags(labels, tags), "thing_share": cropped[:, -1].flatten(1),
                "kept": keep.float().mean()}

    def training_step(self, batch, step: int) -> dict[str, torch.Tensor]:
        whole, crops, boxes, flipped, tags = batch
        cls_logits, patch_scores, tokens = self.forward_with_tokens(crops)         # (B, C), (B, P, C), (B, P, D)
        attention = self.cls_attention()
        self._qkv = None                      # see CaptionTagNet.training_step
        grid = int(round(patch_scores.shape[1] ** 0.5))
        target = self.teacher_targets(whole, boxes, flipped, tags, grid)
        y = target["tags"]
        l_cls = F.binary_cross_entropy_with_logits(cls_logits[:, self.thing_mask], y[:, self.thing_mask])
        l_patch = F.binary_cross_entropy_with_logits(lse_pool(patch_scores, self.r), y)
        l_st = patch_self_training_loss(patch_scores, target["labels"])
        l_att = attention_cross_entropy(smoothed_thing_target(target["thing_share"], self.target_smoothing),
                                        attention)
        loss = l_cls + l_patch + self.self_training_weight * l_st + self.attention_weight * l_att
        out = {"cls_bce": l_cls.detach(), "patch_bce": l_patch.detach(), "teacher_ce": l_st.detach(),
               "attention_ce": l_att.detach(), "kept": target["kept"]}
        if self.separation_weight > 0:
            l_sep = within_image_separation_loss(tokens, target["labels"], self.separation_temperature)
            loss = loss + self.separation_weight * l_sep
            out["separation_ce"] = l_sep.detach()
        return {"loss": loss, **out}

    def after_step(self, step: int) -> None:
        ema_update_(self.teacher, self._student_parts(), self.momentum)


__all__ = ["standardise_per_class", "tagged_labels", "class_balanced_keep", "crop_tags", "smoothed_thing_target",
           "within_image_separation_loss",
           "CaptionTagViews", "collate_views", "TeacherTagNet"]
