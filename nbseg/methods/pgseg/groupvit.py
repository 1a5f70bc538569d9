"""The GroupViT image encoder PGSeg builds on (Xu et al. 2022; PGSeg Sec. 3 "SGM", Sec. 4.2 "PG Unit"), with the
image-level NPR of the PG Unit, scaled to the world (96 px images, patch 8: a 12x12 grid).

* :func:`gumbel_assignment` - ``A = Gumbel-Softmax(Q(G) K(S)^T)`` over the group axis, straight-through hard in
  training, hard argmax at evaluation (Sec. 3); the soft map (plain softmax) is kept for inference (Sec. 5.1).
* :class:`GroupingBlock` - SGM: token-mixing projection of the group tokens, pre-assign cross-attention (the
  "group centres" the PG loss supervises are its output), the assignment, ``S^ = A V(S) + G`` and an MLP.
* :class:`GroupingStage` - transformer blocks over [image tokens; group tokens], then (I-NPR) EM prototypes of
  the stage's *input* tokens and the reconstruction ``S = S + V'`` (Sec. 4.2), then the grouping block.
* :class:`GroupViT` - patch embedding, two grouping stages (group counts e.g. 32 -> 8 on 144 patches, the paper's
  64 -> 8 on 196), final blocks, and the projection MLP to the joint embedding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from nbseg.methods.pgseg.losses import em_prototypes


def gumbel_assignment(logits: torch.Tensor, *, hard: bool, gumbel: bool, tau: float = 1.0, dim: int = 1
                      ) -> torch.Tensor:
    """Assignment of tokens to groups from logits (B, G, N), normalised over ``dim`` (the group axis).

    ``gumbel``: add Gumbel(0, 1) noise (training); ``hard``: forward the one-hot argmax, backward the softmax's
    gradient (straight-through, ``y_hard - y_soft.detach() + y_soft``). Uses the global RNG (re-seeded per step by
    the training loop, so resumed runs draw the same noise)."""
    if gumbel:
        noise = -torch.empty_like(logits).exponential_().log()
        logits = (logits + noise) / tau
    soft = logits.softmax(dim)
    if not hard:
        return soft
    one_hot = torch.zeros_like(soft).scatter_(dim, soft.argmax(dim, keepdim=True), 1.0)
    return one_hot - soft.detach() + soft


class TokenMixer(nn.Module):
    """LayerNorm, then an MLP over the *token* axis: (B, n_in, D) -> (B, n_out, D) (GroupViT's MixerMLP)."""

    def __init__(self, dim: int, n_in: int, n_out: int, hidden: int | None = None):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(n_in, hidden or n_in), nn.Linear(hidden or n_in, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x).transpose(1, 2)))).transpose(1, 2)


def _mlp(dim: int, ratio: float = 4.0) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, int(dim * ratio)), nn.GELU(), nn.Linear(int(dim * ratio), dim))


class CrossAttention(nn.Module):
    """Post-norm cross-attention block: ``q = q + MHA(LN(q), LN(k))``, ``q = q + MLP(LN(q))``, ``LN(q)``."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_q, self.norm_k, self.norm_mlp, self.norm_post = (nn.LayerNorm(dim) for _ in range(4))
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = _mlp(dim)

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        k = self.norm_k(key)
        query = query + self.attn(self.norm_q(query), k, k, need_weights=False)[0]
        return self.norm_post(query + self.mlp(self.norm_mlp(query)))


@dataclass
class Grouped:
    """A grouping block's output: ``tokens`` (B, G, D) segment tokens, ``centres`` (B, G, D) the assignment's
    queries (group centres), ``assignment`` (B, G, N) the hard (train: straight-through) assignment used,
    ``soft`` (B, G, N) its softmax over groups (inference)."""

    tokens: torch.Tensor
    centres: torch.Tensor
    assignment: torch.Tensor
    soft: torch.Tensor


class GroupingBlock(nn.Module):
    """SGM (Sec. 3): ``S^ = A V(S) + G`` with ``A = GumbelSoftmax_G(Q(G) K(S)^T / sqrt(D))``, single head.

    The group tokens are first token-mixed (LN, MLP over tokens, LN) and refined by a pre-assign cross-attention
    to the image tokens; the result is both the queries of A and the residual G. A is normalised per group as
    ``A / (sum_tokens A + 1)`` before it averages V(S) (GroupViT's assignment normalisation)."""

    def __init__(self, dim: int, heads: int, n_groups: int):
        super().__init__()
        self.norm_tokens, self.norm_groups, self.norm_projected = (nn.LayerNorm(dim) for _ in range(3))
        self.mix = TokenMixer(dim, n_groups, n_groups, hidden=max(n_groups, dim // 2))
        self.mix.norm = nn.Identity()                       # norm_groups already normalises the group tokens
        self.pre_assign = CrossAttention(dim, heads)
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_out = nn.LayerNorm(dim)
        self.mlp = _mlp(dim)
        self.scale = dim ** -0.5

    def forward(self, x: torch.Tensor, groups: torch.Tensor) -> Grouped:
        """x (B, N, D) image tokens, groups (B, G, D) -> :class:`Grouped`."""
        x = self.norm_tokens(x)
        centres = self.norm_projected(self.mix(self.norm_groups(groups)))
        centres = self.pre_assign(centres, x)
        logits = self.q(centres) @ self.k(x).transpose(1, 2) * self.scale           # (B, G, N)
        hard = gumbel_assignment(logits, hard=True, gumbel=self.training)
        soft = logits.softmax(dim=1)
        weights = hard / (hard.sum(dim=-1, keepdim=True) + 1.0)
        tokens = self.proj(weights @ self.v(x)) + centres
        tokens = tokens + self.mlp(self.norm_out(tokens))
        return Grouped(tokens=tokens, centres=centres, assignment=hard, soft=soft)


class ReconstructionMLP(nn.Module):
    """I-NPR's reconstruction of the prototypical source, ``V' = MLP(Y^T P)`` (Sec. 4.1-4.2): Linear, BatchNorm,
    ReLU, Linear over tokens (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        return self.fc2(F.relu(self.bn(self.fc1(x.reshape(B * N, D))))).reshape(B, N, -1)


@dataclass
class StageOutput:
    """One grouping stage: its :class:`Grouped` result, the stage's group tokens after the blocks (they seed the
    next stage's), and (I-NPR) the EM prototypes (B, G, D) of its input tokens (None without I-NPR)."""

    grouped: Grouped
    group_tokens: torch.Tensor
    prototypes: torch.Tensor | None


class GroupingStage(nn.Module):
    """``depth`` transformer blocks over [tokens; group tokens], optional I-NPR, then a :class:`GroupingBlock`.

    I-NPR (Sec. 4.2, docs 6.1): EM (``em_iters`` steps, no grad, Eq. 1-2) on the stage's *input* tokens from the
    buffer ``prototypes`` (G, D), initialised N(0, sqrt(2/D)) and L2-normalised; the reconstruction
    ``MLP(Y^T P)`` is added to the blocks' output tokens before grouping."""

    def __init__(self, dim: int, heads: int, depth: int, n_groups: int, n_prev_groups: int | None,
                 inpr: bool, em_iters: int = 10, drop_path: float = 0.0):
        super().__init__()
        self.group_token = nn.Parameter(torch.randn(1, n_groups, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, qkv_bias=True, drop_path=drop_path) for _ in range(depth))
        self.group_projector = TokenMixer(dim, n_prev_groups, n_groups) if n_prev_groups else None
        self.grouping = GroupingBlock(dim, heads, n_groups)
        self.inpr, self.em_iters = inpr, em_iters
        if inpr:
            self.register_buffer("prototypes", F.normalize(torch.randn(n_groups, dim) * (2.0 / dim) ** 0.5, dim=-1))
            self.reconstruct = ReconstructionMLP(dim, 2 * dim)

    def forward(self, x: torch.Tensor, prev_groups: torch.Tensor | None = None) -> tuple[torch.Tensor, StageOutput]:
        """x (B, N, D), prev_groups (B, G_prev, D) or None -> (segment tokens (B, G, D), :class:`StageOutput`)."""
        source = x
        groups = self.group_token.expand(x.shape[0], -1, -1)
        if self.group_projector is not None and prev_groups is not None:
            groups = groups + self.group_projector(prev_groups)
        h = torch.cat([x, groups], dim=1)
        for block in self.blocks:
            h = block(h)
        x, groups = h[:, :x.shape[1]], h[:, x.shape[1]:]
        protos = None
        if self.inpr:
            protos, resp = em_prototypes(source.detach(), self.prototypes, self.em_iters)
            x = x + self.reconstruct((resp @ protos).to(x.dtype))                   # S = S + V'
        grouped = self.grouping(x, groups)
        return grouped.tokens, StageOutput(grouped=grouped, group_tokens=groups, prototypes=protos)


@dataclass
class EncoderOutput:
    """``tokens`` (B, G_last, D) final normalised segment tokens, ``stages`` the two :class:`StageOutput`,
    ``grid`` (h, w) of the patch tokens, ``patch_tokens`` (B, h*w, D) the stage-1 input."""

    tokens: torch.Tensor
    stages: list[StageOutput]
    grid: tuple[int, int]
    patch_tokens: torch.Tensor


class GroupViT(nn.Module):
    """Image (B, 3, H, W) in [0, 1] -> segment tokens and the image embedding Z^i.

    Args:
        image_size, patch_size: training size (positions are interpolated bicubically for other sizes).
        dim, heads: token width and heads; depths: blocks of stage 1, stage 2 and the final stage;
        groups: group tokens of stage 1 and 2; inpr: I-NPR in both stages; embed_dim: joint embedding width.
    """

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, image_size: int, patch_size: int, dim: int, heads: int, depths: tuple[int, int, int],
                 groups: tuple[int, int], inpr: bool, embed_dim: int, em_iters: int = 10, drop_path: float = 0.0):
        super().__init__()
        self.patch_size, self.image_size, self.dim = patch_size, image_size, dim
        self.patch_embed = nn.Conv2d(3, dim, patch_size, patch_size)
        self.patch_norm = nn.LayerNorm(dim)
        grid = image_size // patch_size
        self.pos_embed = nn.Parameter(torch.randn(1, dim, grid, grid) * 0.02)
        self.stages = nn.ModuleList([
            GroupingStage(dim, heads, depths[0], groups[0], None, inpr, em_iters, drop_path),
            GroupingStage(dim, heads, depths[1], groups[1], groups[0], inpr, em_iters, drop_path)])
        self.final_blocks = nn.ModuleList(Block(dim, heads, qkv_bias=True) for _ in range(depths[2]))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Sequential(nn.Linear(dim, 2 * dim), nn.BatchNorm1d(2 * dim), nn.ReLU(),
                                  nn.Linear(2 * dim, embed_dim))
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)

    def patch_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Images (B, 3, H, W) in [0, 1] (H, W multiples of the patch) -> tokens (B, h*w, D) and (h, w)."""
        x = self.patch_embed((images - self.mean) / self.std)
        h, w = x.shape[-2:]
        pos = self.pos_embed if (h, w) == tuple(self.pos_embed.shape[-2:]) else \
            F.interpolate(self.pos_embed, size=(h, w), mode="bicubic", align_corners=False)
        return self.patch_norm((x + pos).flatten(2).transpose(1, 2)), (h, w)

    def encode_tokens(self, x: torch.Tensor, grid: tuple[int, int]) -> EncoderOutput:
        """Patch tokens (B, h*w, D) -> :class:`EncoderOutput` (both grouping stages and the final blocks)."""
        patch_tokens, outputs, prev = x, [], None
        for stage in self.stages:
            x, out = stage(x, prev)
            outputs.append(out)
            prev = out.group_tokens
        for block in self.final_blocks:
            x = block(x)
        return EncoderOutput(tokens=self.norm(x), stages=outputs, grid=grid, patch_tokens=patch_tokens)

    def forward_features(self, images: torch.Tensor) -> EncoderOutput:
        return self.encode_tokens(*self.patch_tokens(images))

    def image_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """Z^i: segment tokens (B, G, D) -> average-pooled, projected (B, E)."""
        return self.head(tokens.mean(dim=1))

    def group_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """Each segment token through the same projection: (B, G, D) -> (B, G, E) (one-to-one inference)."""
        B, G, D = tokens.shape
        return self.head(tokens.reshape(B * G, D)).reshape(B, G, -1)

    def describe(self) -> str:
        inpr = "with I-NPR" if self.stages[0].inpr else "without I-NPR"
        return (f"GroupViT image encoder (patch {self.patch_size}, width {self.dim}, groups "
                f"{self.stages[0].group_token.shape[1]}->{self.stages[1].group_token.shape[1]}, {inpr}), "
                "trained from scratch with the method")


__all__ = ["gumbel_assignment", "GroupingBlock", "GroupingStage", "GroupViT", "EncoderOutput", "StageOutput",
           "Grouped", "TokenMixer", "CrossAttention", "ReconstructionMLP"]
