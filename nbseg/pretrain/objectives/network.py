"""The student / teacher network when an optional objective needs more than DINO's CLS logits: the global views'
patch tokens (iBOT, cross-view, dense contrastive), iBOT's learned mask token, and MAE's decoder.

:class:`PatchStudentTeacherNet` is DINO's :class:`~nbseg.pretrain.dino.StudentTeacherNet` with those parts; its
state dict adds ``mask_token`` and ``mae_decoder.*`` only where the config asks for them, so a run's checkpoint
layout is the one it had before the objectives moved here.
"""
from __future__ import annotations

import torch
from torch import nn

from nbseg.pretrain.dino import DINOHead, StudentTeacherNet, same_size_runs
from nbseg.pretrain.objectives.mae import mae_loss

__all__ = ["PatchStudentTeacherNet"]


class PatchStudentTeacherNet(StudentTeacherNet):
    """Backbone + head applied to a list of views; views of equal size are batched together (as in DINO).

    With ``mask_token`` (iBOT's patch loss) the first global views can also return their patch tokens' head
    outputs, with the patches where ``masks`` is true replaced by a learned mask token before the blocks.
    """

    def __init__(self, backbone: nn.Module, head: DINOHead, mask_token: bool = False,
                 mae_decoder: nn.Module | None = None):
        super().__init__(backbone, head)
        self.mask_token = nn.Parameter(torch.zeros(1, backbone.embed_dim)) if mask_token else None
        # MAE's decoder lives here (not beside the net) so that DDP, the optimiser, gradient clipping, the EMA and
        # the checkpoint all see it like any other parameter; the teacher's copy is never used.
        self.mae_decoder = mae_decoder

    def _tokens(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, 3, H, W), mask (B, h * w) bool or None -> (B, prefix + h * w, D) final-norm tokens."""
        if mask is None:
            return self.backbone.forward_features(x)
        vit = self.backbone
        patches = vit.patch_embed(x)                       # (B, h, w, D) with dynamic_img_size, else (B, N, D)
        flat = patches.reshape(patches.shape[0], -1, patches.shape[-1])
        flat = torch.where(mask.unsqueeze(-1), self.mask_token.to(flat.dtype), flat)
        # timm's own embedding steps (the same ones forward_features runs), so positions and CLS match it exactly
        tokens = vit._pos_embed(flat.view_as(patches))
        tokens = vit.norm_pre(vit.patch_drop(tokens))
        return vit.norm(vit.blocks(tokens))

    def forward(self, views: list[torch.Tensor], masks: list[torch.Tensor] | None = None, patch_views: int = 0,
                patch_embeddings: bool = False, mae_inputs: tuple | None = None):
        """views: list of (B, 3, s_i, s_i) normalised crops -> (len(views) * B, out_dim) CLS logits, view-major.

        With ``patch_views = G > 0`` also return the (G * B, N, out_dim) patch logits of the first G views, whose
        patches are masked by ``masks`` (G tensors of (B, N) bool; None: unmasked); with ``patch_embeddings``
        their (G * B, N, bottleneck_dim) unit embeddings instead (``head.prototype_logits`` turns them into
        the logits).

        With ``mae_inputs = (images, pixels, mask_ratio, generator)`` (see :func:`nbseg.pretrain.objectives.mae.
        mae_loss`) return ``(that output, MAE loss)``; with no views, the MAE loss alone. One forward for both, so
        DDP reduces every gradient of the step once; the views go first, so their stochastic depth draws are those
        of a run without MAE."""
        if mae_inputs is not None:
            out = self.forward(views, masks, patch_views, patch_embeddings) if views else None
            reconstruction = mae_loss(self.backbone, self.mae_decoder, *mae_inputs)
            return reconstruction if out is None else (out, reconstruction)
        cls_tokens, patch_tokens, start = [], [], 0
        prefix = getattr(self.backbone, "num_prefix_tokens", 1)
        for group in same_size_runs(views, split_at=patch_views):
            end = start + len(group)
            if start < patch_views:                      # the global views: same size, possibly masked
                mask = torch.cat(masks[start:end]) if masks is not None else None
                tokens = self._tokens(torch.cat(group), mask)
                patch_tokens.append(tokens[:, prefix:])
            else:
                tokens = self.backbone.forward_features(torch.cat(group))
            cls_tokens.append(tokens[:, 0])             # CLS token after the final norm
            start = end
        cls_logits = self.head(torch.cat(cls_tokens))
        if not patch_views:
            return cls_logits
        patch_z = self.head.embed(torch.cat(patch_tokens))
        return cls_logits, patch_z if patch_embeddings else self.head.prototype_logits(patch_z)
