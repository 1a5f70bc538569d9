"""Where TransFGU's pseudo labels lose accuracy: pure functions that split the pseudo-label error into its stages
(issue #16; ``benchmarks/transfgu_diagnose.py`` runs them on the world).

The pipeline is concepts (k-means of crop CLS tokens, a thing bank and a stuff bank) -> per-concept response maps
(Grad-CAM on the last block's CLS attention, Eq. 5-7) -> argmax over concepts (Eq. 6). Each function measures one
link, so a loss can be put on one stage:

* :func:`group_concept_quality` - purity / NMI of each bank's concepts against the crops' majority class, and how
  many of a bank's crops are what the bank claims (thing crops mostly a thing class, stuff crops a stuff class);
* :func:`tie_share` - how many patches the argmax of Eq. (6) decides by index order alone (maps tied at the top);
* :func:`group_errors` - pixels of a thing class given a stuff concept and the reverse (the thing / stuff split);
* :func:`foreground_split` - the CLS-attention foreground (> its mean, the crop bank's rule) against thing pixels;
* :func:`argmax_within_group` - Eq. (6) restricted to the concepts of each pixel's group (things or stuff) given
  by a mask: with the truth's split, what the maps give when the thing / stuff split is perfect (an oracle upper
  bound, not a method); with the CLS-attention split, ``pseudo_maps: cosine``'s rule.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nbseg.methods.transfgu.bank import keep_group, purity_nmi


def tie_share(maps: torch.Tensor, atol: float = 0.0) -> float:
    """Share of patches whose two largest concept responses are equal (within ``atol``): there ``argmax`` returns
    the lowest concept index, whatever the image shows. maps (B, K, h, w) -> fraction in [0, 1]."""
    if maps.shape[1] < 2:
        return 0.0
    top2 = maps.float().topk(2, dim=1).values
    return float(((top2[:, 0] - top2[:, 1]).abs() <= atol).float().mean())


def group_errors(concept_ids: torch.Tensor, n_things: int, gts: torch.Tensor, is_thing: torch.Tensor,
                 ignore_index: int = 255) -> dict:
    """Thing / stuff confusions of a concept segmentation (concepts ``[0, n_things)`` are things, the rest stuff).

    concept_ids, gts (N, H, W) int64 at the same size; is_thing (C,) bool over the ground-truth classes.
    Returns ``thing_as_stuff`` (share of thing pixels given a stuff concept), ``stuff_as_thing`` (share of stuff
    pixels given a thing concept), ``group_acc`` (share of pixels whose concept is in the right group) and
    ``thing_pixels`` (share of valid pixels that are things)."""
    valid = gts != ignore_index
    truth = is_thing.to(gts.device)[gts.clamp(0, len(is_thing) - 1)] & valid
    pred = (concept_ids < n_things) & valid
    things, stuff = truth.sum().clamp_min(1), (valid & ~truth).sum().clamp_min(1)
    return {"thing_as_stuff": float((truth & ~pred).sum() / things),
            "stuff_as_thing": float((valid & ~truth & pred).sum() / stuff),
            "group_acc": float(((pred == truth) & valid).sum() / valid.sum().clamp_min(1)),
            "thing_pixels": float(truth.sum() / valid.sum().clamp_min(1))}


def foreground_split(fg: torch.Tensor, gts: torch.Tensor, is_thing: torch.Tensor, ignore_index: int = 255) -> dict:
    """The CLS-attention foreground against the truth: fg (N, h, w) bool on the patch grid, upsampled (nearest) to
    the labels' size; gts (N, H, W). Same keys as :func:`group_errors` (foreground = thing)."""
    up = F.interpolate(fg[:, None].float(), size=gts.shape[-2:], mode="nearest")[:, 0] > 0.5
    return group_errors((~up).long(), 1, gts, is_thing, ignore_index)


def argmax_within_group(maps: torch.Tensor, n_things: int, thing_mask: torch.Tensor) -> torch.Tensor:
    """Eq. (6) with the thing / stuff split given by ``thing_mask`` (B, H, W) bool (the truth: an oracle): maps
    (B, K, h, w) upsampled bilinearly to the mask's size; each pixel takes the best concept of its group.
    -> (B, H, W) int64."""
    up = F.interpolate(maps.float(), size=thing_mask.shape[-2:], mode="bilinear", align_corners=False)
    return keep_group(up, n_things, thing_mask, float("-inf")).argmax(1)


def group_concept_quality(crop_concepts: torch.Tensor, groups: torch.Tensor, majority: torch.Tensor,
                          is_thing: torch.Tensor) -> dict:
    """Per bank (``things``: group 0, ``stuff``: group 1) the purity / NMI of its crops' concepts against their
    majority class, and ``right_kind``: the share of its crops whose majority class is of the bank's kind.
    crop_concepts, groups, majority (N, W) int64 (-1: unused / no label); is_thing (C,) bool."""
    out = {}
    for name, group, kind in (("things", 0, True), ("stuff", 1, False)):
        sel = (groups == group) & (majority >= 0) & (crop_concepts >= 0)
        if not sel.any():
            continue
        q = purity_nmi(crop_concepts[sel], majority[sel])
        q["right_kind"] = float((is_thing[majority[sel]] == kind).float().mean())
        out[name] = q
    return out


__all__ = ["tie_share", "group_errors", "foreground_split", "argmax_within_group", "group_concept_quality"]
