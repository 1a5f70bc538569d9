"""TransFGU's Grad-CAM pseudo labels (Sec. 3.2, Eq. 4-7): how much each patch's attention from CLS would have to
change to bring the image's CLS token closer to a concept.

The frozen backbone runs under ``no_grad`` up to its last block (:func:`last_block_inputs`); only the last block is
re-run with its attention probabilities A (B, heads, N, N) exposed as a tensor (:func:`last_block`, DINO's
``get_last_selfattention`` on ``norm1(x)``, paper Eq. 1). For concept c the loss is

* paper (Eq. 5): ``l_c = 1 - x_cls . S_c / sqrt(d)``;
* released code: ``l_c = 1 - cos(x_cls, S_c)``;

and the gradient ``g_c = mean over heads of dl_c / dA[:, :, 0, patches]`` (the CLS row, patch columns) becomes the map
(:func:`concept_maps`):

* paper (Eq. 7, our reading): ``M_c = A_cls + relu(-g_c)``: the attention plus the part of the gradient that
  lowers the loss (Grad-CAM keeps the positive evidence; for a loss to minimise that is ``-g``);
* released: ``M_c = A_cls / max(A_cls) + relu(-g_c) * keep80(relu(-g_c))``, then ``M_c = 0`` where ``g_c > 0``
  (``keep80`` = DINO's keep-80 %-of-the-mass rule on the negative gradient).

Two ways to get every ``g_c`` (same values, tested within 1e-5; ``benchmarks/transfgu.py`` times them):

* ``"backward"`` (the released cost): one forward of the last block, one backward per concept;
* ``"jacobian"``: CLS depends on A only through A's first row (CLS's own attention output), so the CLS token is a
  small function of that row alone (:func:`cls_from_attention_row`); its Jacobian J = dCLS / dA[0] (D, heads, N)
  is computed once per image (``torch.func.jacrev``, vectorised) and every concept's gradient is
  ``g_c = J^T dl_c / dCLS``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nbseg.saliency import keep_mass_mask

VARIANTS = ("paper", "official")
GRADIENT_METHODS = ("jacobian", "backward")


def _check_block(backbone) -> None:
    blk = backbone.model.blocks[-1]
    if getattr(blk.attn, "gate", None) is not None or not hasattr(blk.attn, "qkv"):
        raise ValueError(f"{backbone.name}: Grad-CAM needs a plain timm ViT block (fused qkv, no gate)")


@torch.no_grad()
def last_block_inputs(backbone, images: torch.Tensor) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] -> the last block's input tokens (B, prefix + h*w, D) (frozen, no grad)."""
    model = backbone.model
    x = backbone.normalise(images)
    x = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
    for blk in model.blocks[:-1]:
        x = blk(x)
    return x.float()


def _qkv(blk: nn.Module, x: torch.Tensor):
    """q, k, v (B, heads, N, head_dim) of ``blk`` on ``norm1(x)`` (with the block's q / k norms)."""
    attn = blk.attn
    B, N, _ = x.shape
    qkv = attn.qkv(blk.norm1(x)).reshape(B, N, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    return attn.q_norm(q), attn.k_norm(k), v


def _finish_tokens(backbone, blk: nn.Module, x: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
    """Residual + MLP + final norm after the attention output ``mixed`` (B, heads, n, head_dim) of tokens ``x``."""
    out = blk.attn.proj(blk.attn.norm(mixed.transpose(1, 2).flatten(2)))
    x = x + blk.ls1(out)
    x = x + blk.ls2(blk.mlp(blk.norm2(x)))
    return backbone.model.norm(x)


def attention_probabilities(backbone, tokens: torch.Tensor) -> torch.Tensor:
    """Eq. (1) of the last block: tokens (B, N, D) -> A (B, heads, N, N) = softmax(q k^T / sqrt(d'))."""
    blk = backbone.model.blocks[-1]
    q, k, _ = _qkv(blk, tokens)
    return ((q * blk.attn.scale) @ k.transpose(-2, -1)).softmax(-1)


def last_block(backbone, tokens: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """The last block and final norm with the attention ``attn`` (B, heads, N, N) given: -> tokens (B, N, D)."""
    blk = backbone.model.blocks[-1]
    _, _, v = _qkv(blk, tokens)
    return _finish_tokens(backbone, blk, tokens, attn @ v)


def cls_from_attention_row(backbone, tokens: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """The CLS token as a function of CLS's attention row only: tokens (B, N, D), row (B, heads, N) -> (B, D).
    Equal to ``last_block(tokens, A)[:, 0]`` for any A whose first row is ``row`` (other rows never reach CLS)."""
    blk = backbone.model.blocks[-1]
    _, _, v = _qkv(blk, tokens)
    mixed = (row.unsqueeze(-2) @ v)                                    # (B, heads, 1, head_dim)
    return _finish_tokens(backbone, blk, tokens[:, :1], mixed)[:, 0]


def concept_losses(cls: torch.Tensor, concepts: torch.Tensor, variant: str) -> torch.Tensor:
    """Eq. (5): cls (B, D), concepts S (K, D) -> losses (B, K): paper ``1 - x.S/sqrt(d)``; official ``1 - cos``."""
    if variant == "paper":
        return 1 - cls @ concepts.t() / cls.shape[-1] ** 0.5
    if variant == "official":
        return 1 - F.normalize(cls, dim=-1) @ F.normalize(concepts, dim=-1).t()
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def attention_gradients(backbone, tokens: torch.Tensor, concepts: torch.Tensor, variant: str,
                        method: str = "jacobian") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-concept gradient of Eq. (5) w.r.t. the last block's CLS attention row, and that row.

    Args:
        tokens: (B, N, D) last-block inputs (:func:`last_block_inputs`).
        concepts: S (K, D).
        method: ``"jacobian"`` (one Jacobian per image) or ``"backward"`` (one backward per concept).
    Returns:
        grads (B, K, heads, N) = dl_k / dA[:, :, 0, :], and the row A[:, :, 0, :] (B, heads, N).
    """
    tokens, concepts = tokens.float(), concepts.float().to(tokens.device)
    with torch.no_grad():
        attn = attention_probabilities(backbone, tokens)
    row = attn[:, :, 0].clone()
    if method == "backward":
        a = attn.clone().requires_grad_(True)
        with torch.enable_grad():
            losses = concept_losses(last_block(backbone, tokens, a)[:, 0], concepts, variant)   # (B, K)
            grads = [torch.autograd.grad(losses[:, k].sum(), a, retain_graph=k + 1 < losses.shape[1])[0][:, :, 0]
                     for k in range(losses.shape[1])]
        return torch.stack(grads, 1), row
    if method != "jacobian":
        raise ValueError(f"method must be one of {GRADIENT_METHODS}, got {method!r}")
    from torch.func import jacrev, vmap

    def cls_of(row1, tokens1):                                       # one image: (heads, N), (N, D) -> (D,)
        return cls_from_attention_row(backbone, tokens1[None], row1[None])[0]

    def loss_of(cls1):                                              # (D,) -> (K,)
        return concept_losses(cls1[None], concepts, variant)[0]

    with torch.enable_grad():
        jac = vmap(jacrev(cls_of))(row, tokens)                     # (B, D, heads, N)
        cls = vmap(cls_of)(row, tokens)
        dloss = vmap(jacrev(loss_of))(cls)                          # (B, K, D)
    return torch.einsum("bkd,bdhn->bkhn", dloss, jac).detach(), row


def concept_maps(grads: torch.Tensor, row: torch.Tensor, grid: tuple[int, int], variant: str,
                 n_prefix: int = 1, mass: float = 0.8) -> torch.Tensor:
    """Eq. (7): grads (B, K, heads, N), row (B, heads, N) -> response maps M (B, K, h, w) (see the module doc).
    Head means are taken over the patch columns (prefix tokens dropped)."""
    h, w = grid
    g = grads[..., n_prefix:].mean(2).reshape(*grads.shape[:2], h, w)          # (B, K, h, w)
    a = row[..., n_prefix:].mean(1).reshape(-1, 1, h, w)                        # (B, 1, h, w)
    negative = (-g).clamp_min(0)
    if variant == "paper":
        return a + negative
    if variant != "official":
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    keep = keep_mass_mask(negative, mass) & (negative > 0)
    maps = a / a.amax((-2, -1), keepdim=True).clamp_min(1e-12) + negative * keep
    return maps.masked_fill(g > 0, 0.0)


def pseudo_label_maps(backbone, images: torch.Tensor, concepts: torch.Tensor, variant: str,
                      method: str = "jacobian", tokens: torch.Tensor | None = None, mass: float = 0.8
                      ) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] (or their last-block inputs ``tokens``) -> Grad-CAM maps (B, K, h, w)."""
    _check_block(backbone)
    p = backbone.patch_size
    grid = (images.shape[-2] // p, images.shape[-1] // p)
    if tokens is None:
        tokens = last_block_inputs(backbone, images)
    grads, row = attention_gradients(backbone, tokens.to(backbone.device), concepts, variant, method)
    return concept_maps(grads, row, grid, variant, backbone.num_prefix_tokens, mass)


__all__ = ["last_block_inputs", "attention_probabilities", "last_block", "cls_from_attention_row", "concept_losses",
           "attention_gradients", "concept_maps", "pseudo_label_maps", "VARIANTS", "GRADIENT_METHODS"]
