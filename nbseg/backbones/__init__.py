"""Frozen self-supervised ViT backbones: timm models with hub or local weights, and nbseg's embedded ViT.

``load(name, weights=None, *, random_init=False, device="cpu")`` returns a frozen :class:`Backbone` whose
:meth:`Backbone.extract` gives, for float images in [0, 1] of shape (B, 3, H, W):

* ``patches`` (B, h, w, D): the last block's output after the final LayerNorm (the features STEGO, AlignSeg and
  TransFGU use), prefix tokens (CLS, registers) dropped;
* ``cls`` (B, D): the CLS token after the final LayerNorm;
* ``attn`` (B, heads, h, w): the last block's post-softmax attention from CLS to the patches, computed on
  ``norm1(x)`` exactly as in DINO's ``get_last_selfattention``.

Only the CLS row of the last block's attention is computed explicitly, from the ``qkv`` projection that the fused
kernel consumes anyway (a forward hook captures it), so every block keeps timm's fused attention and ``extract``
costs the same as ``forward_features`` plus O(B * heads * N * head_dim).

Weights: a timm name loads from the hub (``pretrained=True``) when online, or from ``weights=PATH`` offline. A file
may be a bare state dict, a DINO training checkpoint (``teacher`` / ``student`` keys, ``module.`` / ``backbone.``
prefixes), a ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper, nbseg's own export, or ``.safetensors``.
No weights and no ``random_init=True`` is an error; a file that does not fit the model is an error naming the file
and the mismatched keys (never a silent ``strict=False``).

The pieces: :mod:`.vit` (architectures, ``create_model``), :mod:`.weights` (reading weights files), :mod:`.extract`
(:class:`Backbone`, :class:`Features`); this module names the shipped ViTs and loads any backbone (:func:`load`),
and holds ``nbseg backbones list | info``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from nbseg.backbones.extract import (IMAGENET_MEAN, IMAGENET_STD, Backbone, Features, cls_attention_from_qkv,
                                     resize_to_patch_multiple)
from nbseg.backbones.vit import VIT_TINY, VIT_TINY_CONVSTEM, ConvStemPatchEmbed, create_model
from nbseg.backbones.weights import load_state_into, read_weights_file, state_dict_sha256
from nbseg.errors import WeightsError
from nbseg.io import sha256_file

__all__ = ["EMBEDDED_NAME", "EMBEDDED_SSL_NAME", "VIT_TINY", "VIT_TINY_CONVSTEM", "EMBEDDED_ARCH", "EMBEDDED",
           "EMBEDDED_WEIGHTS", "EMBEDDED_SSL_WEIGHTS", "IMAGENET_MEAN", "IMAGENET_STD", "KNOWN_NAMES", "Backbone",
           "Features", "ConvStemPatchEmbed", "cls_attention_from_qkv", "create_model", "state_dict_sha256",
           "read_weights_file", "load_state_into", "load", "resize_to_patch_multiple", "register_cli"]

EMBEDDED_NAME = "embedded"
EMBEDDED_SSL_NAME = "embedded-ssl"
EMBEDDED_ARCH = VIT_TINY_CONVSTEM                     # the default embedded backbone's architecture
ASSETS = Path(__file__).resolve().parent.parent / "assets"
EMBEDDED_WEIGHTS = ASSETS / "embedded_vit_tiny_patch8.pt"
EMBEDDED_SSL_WEIGHTS = ASSETS / "embedded_ssl_vit_tiny_patch8.pt"
# The ViTs shipped with nbseg (both trained by nbseg on its synthetic world, never a paper's model), with the way
# each was trained: figure titles and tables carry it, so no reader takes one for the other (or for DINO on images).
# name -> (architecture, weights file, how it was trained); the file is looked up when loading (tests patch it).
EMBEDDED = {
    EMBEDDED_NAME: (VIT_TINY_CONVSTEM, lambda: EMBEDDED_WEIGHTS, "weakly supervised by captions, not DINO"),
    EMBEDDED_SSL_NAME: (VIT_TINY, lambda: EMBEDDED_SSL_WEIGHTS, "self-supervised, DINO"),
}
# Names shown by ``nbseg backbones list``; any other timm ViT name works too.
KNOWN_NAMES = [
    EMBEDDED_NAME, EMBEDDED_SSL_NAME,
    "vit_small_patch16_224.dino", "vit_small_patch8_224.dino",
    "vit_base_patch16_224.dino", "vit_base_patch8_224.dino",
    "vit_small_patch14_dinov2.lvd142m", "vit_small_patch14_reg4_dinov2.lvd142m",
]



def load(name: str, weights: str | Path | None = None, *, random_init: bool = False, device: str | torch.device = "cpu",
         seed: int = 0) -> Backbone:
    """Load a frozen backbone.

    Args:
        name: a timm ViT name (``vit_small_patch16_224.dino``, ``vit_small_patch8_224.dino``, ...), nbseg's
            ``EMBEDDED_ARCH``, ``"embedded"`` for the default ViT shipped with nbseg (trained on the world, weakly
            supervised by its captions: not DINO) or ``"embedded-ssl"`` for the best self-supervised (DINO) one.
        weights: a local weights file (offline use). ``None``: the hub for timm names, the shipped file for
            ``"embedded"``.
        random_init: the same architecture with random weights (seeded by ``seed``): the baseline every probe
            compares with. Must be asked for explicitly.
        device: where the backbone lives.
    """
    if random_init and weights is not None:
        raise WeightsError("pass either weights=PATH or random_init=True, not both")
    arch = EMBEDDED[name][0] if name in EMBEDDED else name
    training = None
    if name in EMBEDDED and weights is None and not random_init:
        weights, training = EMBEDDED[name][1](), EMBEDDED[name][2]
        if not weights.is_file():
            raise WeightsError(f"the embedded backbone file {weights} is missing from this installation: "
                               "reinstall nbseg from the repository, or train one with `nbseg pretrain` and pass "
                               "weights=PATH, or use random_init=True for an untrained baseline")
    if random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = create_model(arch, pretrained=False)
        sha = state_dict_sha256(model.state_dict())
        path = None
    elif weights is not None:
        model = create_model(arch, pretrained=False)
        load_state_into(model, read_weights_file(weights), str(weights))
        sha, path = sha256_file(weights), str(weights)
    else:
        try:
            model = create_model(arch, pretrained=True)
        except WeightsError:
            raise
        except Exception as err:
            raise WeightsError(
                f"could not get pretrained weights for {name!r} from the hub ({type(err).__name__}: {err}). "
                f"Offline? Download the checkpoint elsewhere and pass weights=PATH (a DINO checkpoint such as "
                f"dino_deitsmall16_pretrain.pth or a timm state dict), or pass random_init=True for an untrained "
                f"baseline.") from err
        sha, path = state_dict_sha256(model.state_dict()), None
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    shown = name if name in EMBEDDED else arch
    return Backbone(model, shown, weights_path=path, weights_sha256=sha, random_init=random_init,
                    mean=mean, std=std, training=training).to(device)


# ----------------------------------------------------------------------------------------------------------
# CLI: nbseg backbones list | info NAME
# ----------------------------------------------------------------------------------------------------------

def register_cli(subparsers) -> None:
    p = subparsers.add_parser("backbones", help="list known backbones or describe one",
                              description="List backbone names, or load one and print what it is.")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.add_parser("list", help="print known backbone names").set_defaults(func=_cli_list)
    info = sub.add_parser("info", help="load a backbone and print its facts (patch size, dim, heads, sha256)")
    info.add_argument("name")
    info.add_argument("--weights", default=None, help="local weights file (offline)")
    info.add_argument("--random-init", action="store_true", help="random weights (explicit baseline)")
    info.set_defaults(func=_cli_info)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _cli_list(args) -> int:
    for n in KNOWN_NAMES:
        print(n)
    print("(any other timm ViT name works too; pass weights=PATH offline)")
    return 0


def _cli_info(args) -> int:
    bb = load(args.name, args.weights, random_init=args.random_init)
    print(json.dumps(bb.info(), indent=1))
    return 0
