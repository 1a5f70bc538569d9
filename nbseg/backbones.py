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
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nbseg.consent import unsafe_pickle_allowed
from nbseg.errors import WeightsError

EMBEDDED_NAME = "embedded"
EMBEDDED_SSL_NAME = "embedded-ssl"
VIT_TINY = "nbseg_vit_tiny_patch8"                    # ViT-Tiny/8 sized for the 96-px world
VIT_TINY_CONVSTEM = "nbseg_vit_tiny_convstem_patch8"  # the same with a convolutional patch embedding
EMBEDDED_ARCH = VIT_TINY_CONVSTEM                     # the default embedded backbone's architecture
ASSETS = Path(__file__).resolve().parent / "assets"
EMBEDDED_WEIGHTS = ASSETS / "embedded_vit_tiny_patch8.pt"
EMBEDDED_SSL_WEIGHTS = ASSETS / "embedded_ssl_vit_tiny_patch8.pt"
# The ViTs shipped with nbseg (both trained by nbseg on its synthetic world, never a paper's model), with the way
# each was trained: figure titles and tables carry it, so no reader takes one for the other (or for DINO on images).
# name -> (architecture, weights file, how it was trained); the file is looked up when loading (tests patch it).
EMBEDDED = {
    EMBEDDED_NAME: (VIT_TINY_CONVSTEM, lambda: EMBEDDED_WEIGHTS, "weakly supervised by captions, not DINO"),
    EMBEDDED_SSL_NAME: (VIT_TINY, lambda: EMBEDDED_SSL_WEIGHTS, "self-supervised, DINO"),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Names shown by ``nbseg backbones list``; any other timm ViT name works too.
KNOWN_NAMES = [
    EMBEDDED_NAME, EMBEDDED_SSL_NAME,
    "vit_small_patch16_224.dino", "vit_small_patch8_224.dino",
    "vit_base_patch16_224.dino", "vit_base_patch8_224.dino",
    "vit_small_patch14_dinov2.lvd142m", "vit_small_patch14_reg4_dinov2.lvd142m",
]


class ConvStemPatchEmbed(nn.Module):
    """A patch embedding made of convolutions (Xiao et al., "Early convolutions help transformers see better",
    NeurIPS 2021): three 3x3 stride-2 conv + BN + ReLU layers (3 -> 24 -> 48 -> 96 channels) and a 1x1 projection to
    ``embed_dim``, so each token sees its 8x8 patch (and a little context) through a small CNN instead of one linear
    map. Same interface and output as timm's ``PatchEmbed`` with ``patch_size=8`` (what ``VisionTransformer`` asks
    of its ``embed_layer``): (B, 3, H, W) -> (B, H/8, W/8, D) with ``output_fmt="NHWC"``, else (B, H/8 * W/8, D).

    Why nbseg ships it: a plain ViT learns local texture from scratch slowly, and the embedded backbone is trained
    on 2 CPU cores (see the model card's learning curves)."""

    def __init__(self, img_size=64, patch_size=8, in_chans=3, embed_dim=192, bias=True, strict_img_size=True,
                 output_fmt=None, dynamic_img_pad=False, norm_layer=None, flatten=True, **_):
        super().__init__()
        from timm.layers import Format

        if patch_size != 8:
            raise WeightsError(f"ConvStemPatchEmbed makes patches of 8 px (three stride-2 convs), not {patch_size}")
        self.patch_size = (8, 8)
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.grid_size = (self.img_size[0] // 8, self.img_size[1] // 8)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.dynamic_img_pad = dynamic_img_pad
        self.strict_img_size = strict_img_size
        self.output_fmt = Format(output_fmt) if output_fmt is not None else Format.NCHW
        self.flatten = flatten and output_fmt is None
        layers, width = [], in_chans
        for out in (24, 48, 96):
            layers += [nn.Conv2d(width, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True)]
            width = out
        layers.append(nn.Conv2d(width, embed_dim, 1, bias=bias))
        self.proj = nn.Sequential(*layers)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def feat_ratio(self, as_scalar=True):
        return 8 if as_scalar else (8, 8)

    def dynamic_feat_size(self, img_size):
        return img_size[0] // 8, img_size[1] // 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        if H % 8 or W % 8:
            raise ValueError(f"input size {H}x{W} is not a multiple of the patch size 8")
        x = self.proj(x)                                   # (B, D, H/8, W/8)
        if self.flatten:
            x = x.flatten(2).transpose(1, 2)
        elif self.output_fmt.value == "NHWC":
            x = x.permute(0, 2, 3, 1)
        return self.norm(x)


def _register_embedded_arch() -> None:
    """Register nbseg's small ViTs with timm, so ``timm.create_model(VIT_TINY)`` and
    ``load(VIT_TINY_CONVSTEM, weights=FILE)`` work like any timm name."""
    import timm
    from timm.models import register_model
    from timm.models.vision_transformer import VisionTransformer

    if timm.models.is_model(VIT_TINY) and timm.models.is_model(VIT_TINY_CONVSTEM):
        return

    def tiny_vit(pretrained: bool, kwargs: dict, **arch) -> VisionTransformer:
        if pretrained:
            raise WeightsError("nbseg's embedded ViTs have no hub weights: use nbseg.backbones.load('embedded')")
        args = dict(img_size=64, patch_size=8, embed_dim=192, depth=6, num_heads=6, mlp_ratio=4.0, qkv_bias=True,
                    num_classes=0, **arch)
        args.update({k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay",
                                                                   "cache_dir")})
        return VisionTransformer(**args)

    @register_model
    def nbseg_vit_tiny_patch8(pretrained: bool = False, **kwargs) -> VisionTransformer:
        """ViT-Tiny/8 sized for the 96-px embedded world: 192-d, 6 blocks, 6 heads (2.7M parameters)."""
        return tiny_vit(pretrained, kwargs)

    @register_model
    def nbseg_vit_tiny_convstem_patch8(pretrained: bool = False, **kwargs) -> VisionTransformer:
        """The same ViT-Tiny/8 with a convolutional patch embedding (:class:`ConvStemPatchEmbed`)."""
        return tiny_vit(pretrained, kwargs, embed_layer=ConvStemPatchEmbed)



_register_embedded_arch()


@dataclass
class Features:
    """Output of :meth:`Backbone.extract`. Shapes: patches (B, h, w, D), cls (B, D), attn (B, heads, h, w)."""

    patches: torch.Tensor
    cls: torch.Tensor
    attn: torch.Tensor

    def to(self, device) -> "Features":
        return Features(self.patches.to(device), self.cls.to(device), self.attn.to(device))


def cls_attention_from_qkv(qkv: torch.Tensor, num_heads: int, scale: float, num_prefix_tokens: int,
                           q_norm: nn.Module | None = None, k_norm: nn.Module | None = None) -> torch.Tensor:
    """Softmax attention of the CLS query over all tokens, from a block's fused qkv projection.

    ``softmax(q_cls k^T * scale)`` (the first row of DINO's last-layer attention) restricted to patch keys.

    Args:
        qkv: (B, N, 3 * heads * head_dim) output of ``attn.qkv`` on ``norm1(x)``; token 0 is CLS.
    Returns:
        (B, heads, N - num_prefix_tokens) attention from CLS to each patch (rows sum to 1 over *all* N tokens,
        as in DINO; the prefix columns are dropped after the softmax).
    """
    B, N, three_c = qkv.shape
    head_dim = three_c // (3 * num_heads)
    q, k, _ = qkv.reshape(B, N, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    if q_norm is not None:
        q, k = q_norm(q), k_norm(k)
    logits = (q[:, :, :1] * scale) @ k.transpose(-2, -1)          # (B, heads, 1, N)
    return logits.float().softmax(dim=-1)[:, :, 0, num_prefix_tokens:]


class Backbone(nn.Module):
    """A frozen ViT that extracts patch tokens, the CLS token and the last block's CLS attention."""

    def __init__(self, model: nn.Module, name: str, *, weights_path: str | None, weights_sha256: str,
                 random_init: bool, mean=IMAGENET_MEAN, std=IMAGENET_STD, training: str | None = None):
        super().__init__()
        self.training_source = training      # how the weights were trained, when nbseg knows (embedded backbones)
        if not hasattr(model, "blocks") or not hasattr(model.blocks[-1], "attn"):
            raise WeightsError(f"{name}: nbseg backbones must be timm VisionTransformers (blocks[-1].attn)")
        self.model = model.eval().requires_grad_(False)
        self.name = name
        self.weights_path = weights_path
        self.weights_sha256 = weights_sha256
        self.random_init = random_init
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self._qkv: torch.Tensor | None = None
        model.blocks[-1].attn.qkv.register_forward_hook(self._capture_qkv)

    # ---- what a backbone is -------------------------------------------------------------------------
    @property
    def patch_size(self) -> int:
        ps = self.model.patch_embed.patch_size
        return int(ps[0] if isinstance(ps, (tuple, list)) else ps)

    @property
    def dim(self) -> int:
        return int(self.model.embed_dim)

    @property
    def num_heads(self) -> int:
        return int(self.model.blocks[-1].attn.num_heads)

    @property
    def num_prefix_tokens(self) -> int:
        return int(getattr(self.model, "num_prefix_tokens", 1))

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def describe(self) -> str:
        """One line for figure titles and tables: which backbone and which weights produced a result."""
        if self.random_init:
            return f"{self.name} (RANDOM INIT)"
        src = Path(self.weights_path).name if self.weights_path else "hub"
        how = f"{self.training_source}, " if self.training_source else ""
        return f"{self.name} ({how}{src}, sha256 {self.weights_sha256[:10]})"

    def info(self) -> dict:
        return {"name": self.name, "weights_path": self.weights_path, "weights_sha256": self.weights_sha256,
                "random_init": self.random_init, "training": self.training_source,
                "patch_size": self.patch_size, "dim": self.dim,
                "num_heads": self.num_heads}

    # ---- extraction ----------------------------------------------------------------------------------
    def _capture_qkv(self, module, inputs, output) -> None:
        self._qkv = output

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Check and normalise float images in [0, 1], (B, 3, H, W) with H, W multiples of the patch size."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"extract expects images of shape (B, 3, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"extract expects float images in [0, 1], got dtype {images.dtype} "
                             "(divide uint8 images by 255)")
        H, W = images.shape[-2:]
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {p}: resize or crop to "
                             f"{H // p * p}x{W // p * p}")
        return (images.to(self.device, torch.float32) - self.mean) / self.std

    @torch.inference_mode()
    def extract(self, images: torch.Tensor, amp: bool | None = None) -> Features:
        """Patch tokens, CLS token and last-block CLS->patch attention for float images in [0, 1].

        Args:
            images: (B, 3, H, W) float in [0, 1]; H and W multiples of ``patch_size``; any size (the positional
                embedding is interpolated).
            amp: bf16 autocast; default on for CUDA, off on CPU.
        Returns:
            :class:`Features` with patches (B, h, w, D), cls (B, D), attn (B, heads, h, w), all float32.
        """
        x = self.normalise(images)
        B, _, H, W = x.shape
        h, w = H // self.patch_size, W // self.patch_size
        amp = (x.device.type == "cuda") if amp is None else amp
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            tokens = self.model.forward_features(x)               # (B, prefix + h*w, D), after the final norm
        attn_mod = self.model.blocks[-1].attn
        qn = attn_mod.q_norm if not isinstance(attn_mod.q_norm, nn.Identity) else None
        kn = attn_mod.k_norm if qn is not None else None
        attn = cls_attention_from_qkv(self._qkv, attn_mod.num_heads, attn_mod.scale, self.num_prefix_tokens, qn, kn)
        self._qkv = None
        npt = self.num_prefix_tokens
        tokens = tokens.float()
        return Features(patches=tokens[:, npt:].reshape(B, h, w, -1), cls=tokens[:, 0],
                        attn=attn.reshape(B, -1, h, w))

    @torch.inference_mode()
    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """timm's plain ``forward_features`` on normalised images (the reference the benchmark compares with)."""
        return self.model.forward_features(self.normalise(images))

    def forward(self, images: torch.Tensor) -> Features:  # nn.Module protocol
        return self.extract(images)

    def train(self, mode: bool = True) -> "Backbone":
        # A frozen backbone stays in eval mode (no dropout, no drop-path) whatever its parent module does.
        return super().train(False)


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------

def create_model(arch: str, **kwargs) -> nn.Module:
    """``timm.create_model`` for a ViT with a dynamic input size and no classifier head."""
    import timm

    if not timm.models.is_model(arch):
        close = timm.list_models(f"*{arch.split('.')[0].split('_')[0]}*")[:8]
        raise WeightsError(f"unknown backbone {arch!r}: use a timm ViT name such as "
                           f"'vit_small_patch16_224.dino', or 'embedded'. Similar timm names: {close}")
    kwargs.setdefault("num_classes", 0)
    kwargs.setdefault("dynamic_img_size", True)
    return timm.create_model(arch, **kwargs)


def state_dict_sha256(state_dict: dict) -> str:
    """sha256 over the tensors of a state dict in key order (identifies hub or random-init weights)."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key]
        if torch.is_tensor(t):
            h.update(key.encode())
            # reshape(-1): 0-d tensors (BatchNorm's num_batches_tracked) cannot be viewed as bytes directly
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


_PREFIXES = ("module.", "backbone.", "model.", "encoder.")


# Weights are read with torch's safe loader: tensors, containers and plain values (plus argparse.Namespace, which
# DINO's training checkpoints carry as their arguments). Full unpickling runs code from the file, so it needs the
# user's explicit consent (nbseg.consent, `nbseg --allow-unsafe-pickle`).
def _torch_file_kind(path: Path) -> str | None:
    """``"zip"`` or ``"pickle"`` for the two layouts torch.save writes, None for anything else (text, HTML...)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    return None


def _load_torch_file(path: Path, allow_unsafe: bool) -> object:
    import argparse
    import pickle

    if _torch_file_kind(path) is None:
        with open(path, "rb") as f:
            head = f.read(40)
        looks = "text" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "binary data"
        raise WeightsError(f"{path} is not a PyTorch weights file (it is {looks} starting with {head[:24]!r}); pass "
                           "a .pth / .pt checkpoint or a .safetensors file (a download that failed may have saved "
                           "an error page)")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not allow_unsafe:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise WeightsError(
                f"{path} holds Python objects beyond tensors, so the safe loader refused it ({reason}); unpickling "
                "it would run code stored in the file. If you made the file yourself or fully trust its source, "
                "rerun with `nbseg --allow-unsafe-pickle ...` (Python: allow_unsafe_pickle=True)") from None
    except Exception as err:
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {err}); the file "
                           "is truncated or corrupt: download it again") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from None


def read_weights_file(path: str | Path, *, allow_unsafe_pickle: bool | None = None) -> dict[str, torch.Tensor]:
    """Read a weights file and return the backbone's state dict (prefixes stripped, heads untouched).

    Accepts a bare state dict, DINO checkpoints (``teacher`` preferred over ``student``), ``state_dict`` /
    ``model`` wrappers, nbseg exports and ``.safetensors``. Files are loaded with torch's safe loader; one that
    needs full unpickling is refused unless ``allow_unsafe_pickle`` (None: the process-wide
    :func:`nbseg.consent.allow_unsafe_pickle` consent) says the user trusts it.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist: pass the path of a downloaded checkpoint, e.g. "
                           "dino_deitsmall16_pretrain.pth")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path))
        except Exception as err:
            raise WeightsError(f"{path} is not a readable safetensors file ({type(err).__name__}: {err})") from None
    else:
        allowed = unsafe_pickle_allowed() if allow_unsafe_pickle is None else allow_unsafe_pickle
        obj = _load_torch_file(path, allowed)
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state dict or checkpoint")
    for key in ("teacher", "state_dict", "model", "student"):
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    state = {}
    for k, v in obj.items():
        if not torch.is_tensor(v):
            continue
        for prefix in _PREFIXES:
            if k.startswith(prefix):
                k = k[len(prefix):]
        state[k] = v
    if not state:
        raise WeightsError(f"{path} contains no tensors")
    return state


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly into ``model``: drop DINO projection-head keys, resample the positional embedding,
    and raise :class:`WeightsError` naming ``source`` and the keys when anything else does not fit."""
    from timm.layers import resample_abs_pos_embed

    own = model.state_dict()
    state = {k: v for k, v in state.items() if not (k.startswith("head.") and k not in own)}
    if "pos_embed" in state and "pos_embed" in own and state["pos_embed"].shape != own["pos_embed"].shape:
        npt = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1)
        n_old = state["pos_embed"].shape[1] - npt
        side_old = int(round(n_old ** 0.5))
        side_new = tuple(model.patch_embed.grid_size)
        if side_old * side_old != n_old:
            raise WeightsError(f"{source}: pos_embed has {n_old} patch positions, not a square grid")
        state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], new_size=side_new,
                                                    old_size=(side_old, side_old), num_prefix_tokens=npt)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        def few(keys):
            return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")
        details = []
        if missing:
            details.append(f"missing keys: {few(missing)}")
        if unexpected:
            details.append(f"unexpected keys: {few(unexpected)}")
        if wrong_shape:
            details.append("shape mismatch: " + few([f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                                                     for k in wrong_shape]))
        raise WeightsError(f"{source} does not fit the backbone architecture ({'; '.join(details)}). "
                           "Check that the weights belong to this model name (e.g. patch 8 vs 16, small vs base).")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


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
        from nbseg.io import sha256_file

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


def resize_to_patch_multiple(images: torch.Tensor, patch_size: int, size: int | tuple[int, int] | None = None
                             ) -> torch.Tensor:
    """Bilinearly resize (B, 3, H, W) images to ``size`` (or the nearest lower multiple of ``patch_size``)."""
    if size is None:
        H, W = images.shape[-2:]
        size = (max(patch_size, H // patch_size * patch_size), max(patch_size, W // patch_size * patch_size))
    elif isinstance(size, int):
        size = (size, size)
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


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
    import json

    bb = load(args.name, args.weights, random_init=args.random_init)
    print(json.dumps(bb.info(), indent=1))
    return 0
