"""Rendering one world image, its labels and captions from ``(seed, index)`` alone: textures as functions of pixel
coordinates, thing shapes, the scene layout (stuff stacked top to bottom, things where they belong)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from nbseg.world.classes import (CLASS_COLOURS, COLOUR_NAMES, PALETTE, STUFF_CLASSES, STUFF_HEIGHT, SYNONYMS,
                                 THING_CLASSES, THING_HEIGHT, TWO_PART_THINGS, Sample, WorldSpec)


# ----------------------------------------------------------------------------------------------------------
# Textures: functions of pixel coordinates (u, v) in a rotated frame, returning a mixing weight in [0, 1].
# Periods are in pixels (9-15 on things), so textures stay resolvable by an 8-pixel patch after crop rescaling.
# ----------------------------------------------------------------------------------------------------------

def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    field_ -= field_.min()
    return field_ / max(float(field_.max()), 1e-6)


def _texture(kind: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mixing weight in [0, 1] for texture ``kind`` at rotated pixel coordinates (u, v)."""
    period = rng.uniform(9.0, 15.0)
    phase = rng.uniform(0, 2 * np.pi)
    if kind == "dots":        # polka dots on a square lattice
        du = np.mod(u / period + phase, 1.0) - 0.5
        dv = np.mod(v / period + phase, 1.0) - 0.5
        return (du * du + dv * dv < 0.08).astype(np.float32)
    if kind == "checker":
        return ((np.floor(u / period + phase) + np.floor(v / period)) % 2).astype(np.float32)
    if kind == "stripes":     # bold parallel stripes
        return (np.sin(2 * np.pi * u / period + phase) > 0).astype(np.float32)
    if kind == "rings":       # concentric rings around the object centre
        return (np.sin(2 * np.pi * np.hypot(u, v) / period + phase) > 0).astype(np.float32)
    if kind == "grid":        # thin lines on a square grid
        gu = np.abs(np.mod(u / period + phase, 1.0) - 0.5) > 0.38
        gv = np.abs(np.mod(v / period + phase, 1.0) - 0.5) > 0.38
        return (gu | gv).astype(np.float32)
    if kind == "spokes":      # radial wedges
        return (np.sin(6 * np.arctan2(v, u) + phase) > 0).astype(np.float32)
    if kind == "hatch":       # diagonal cross-hatch
        a = np.sin(2 * np.pi * (u + v) / period + phase) > 0.4
        b = np.sin(2 * np.pi * (u - v) / period + phase) > 0.4
        return (a | b).astype(np.float32)
    if kind == "zigzag":
        return (np.sin(2 * np.pi * (v + 2.0 * np.abs(np.mod(u / period, 1.0) - 0.5) * period) / period) > 0
                ).astype(np.float32)
    if kind == "solid_speckle":  # nearly flat with sparse blotches
        return (ndimage.gaussian_filter(rng.random(u.shape).astype(np.float32), 1.5) > 0.56).astype(np.float32)
    # ---------- stuff textures ----------
    if kind == "sky":         # smooth gradient with soft clouds
        return np.clip(0.6 * _smooth_noise(rng, u.shape, 6.0) + 0.4 * (v - v.min()) / max(np.ptp(v), 1), 0, 1)
    if kind == "grass":       # vertical blades, 9 px apart, bent by smooth noise
        blades = np.sin(2 * np.pi * u / 9.0 + 3 * _smooth_noise(rng, u.shape, 4.0)) > 0.2
        return np.clip(blades * 0.8 + 0.2 * rng.random(u.shape), 0, 1).astype(np.float32)
    if kind == "water":       # horizontal waves
        return (0.5 + 0.5 * np.sin(2 * np.pi * v / 11.0 + 1.5 * np.sin(2 * np.pi * u / 23.0 + phase))
                ).astype(np.float32)
    if kind == "brick":       # running-bond bricks (10 x 20 px) with mortar lines
        row = np.floor(v / 10.0)
        uu = u + 10.0 * (row % 2)
        mortar = (np.mod(v, 10.0) < 2.0) | (np.mod(uu, 20.0) < 2.0)
        return mortar.astype(np.float32)
    if kind == "sand":        # wind ripples (14 px) under a coarse grain
        grain = ndimage.gaussian_filter(rng.random(u.shape).astype(np.float32), 1.0)
        ripples = 0.5 + 0.5 * np.sin(2 * np.pi * (v + 2.0 * np.sin(2 * np.pi * u / 31.0 + phase)) / 14.0)
        return np.clip(0.6 * ripples + 1.6 * (grain - 0.5) + 0.2, 0, 1).astype(np.float32)
    raise ValueError(f"unknown texture {kind!r}")


THING_TEXTURE = {"ball": "dots", "box": "checker", "kite": "stripes", "star": "rings", "cross": "grid",
                 "ring": "spokes", "mushroom": ("dots", "stripes"), "house": ("hatch", "brick_small")}


def _thing_masks(name: str, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Boolean masks of the parts of thing ``name`` at normalised object coordinates (x, y) (radius ~1)."""
    r = np.hypot(x, y)
    if name == "ball":
        return [r < 1.0]
    if name == "box":
        return [(np.abs(x) < 0.82) & (np.abs(y) < 0.82)]
    if name == "kite":        # isosceles triangle pointing up
        return [(y > -0.9) & (y < 0.8) & (np.abs(x) < (y + 0.9) * 0.55)]
    if name == "star":
        theta = np.arctan2(y, x)
        return [r < 0.45 + 0.5 * (0.5 + 0.5 * np.cos(5 * theta))]
    if name == "cross":
        return [((np.abs(x) < 0.3) & (np.abs(y) < 0.95)) | ((np.abs(y) < 0.3) & (np.abs(x) < 0.95))]
    if name == "ring":
        return [(r < 1.0) & (r > 0.55)]
    if name == "mushroom":    # cap (upper half disc) + stem (rectangle below)
        cap = (r < 1.0) & (y < 0.05)
        stem = (np.abs(x) < 0.3) & (y >= 0.05) & (y < 0.95)
        return [cap, stem]
    if name == "house":       # roof (triangle) + wall (rectangle)
        roof = (y < -0.1) & (y > -1.0) & (np.abs(x) < (y + 1.0) * 0.95)
        wall = (np.abs(x) < 0.7) & (y >= -0.1) & (y < 0.9)
        return [roof, wall]
    raise ValueError(name)


def _jittered_colour(rng: np.random.Generator, exclude: int | None = None, preferred: tuple[int, ...] = (),
                     prior: float = 0.0) -> tuple[np.ndarray, int]:
    """A palette colour with per-instance jitter: one of ``preferred`` with probability ``prior``, else any."""
    choices = [i for i in preferred if i != exclude]
    if choices and rng.random() < prior:
        idx = int(choices[int(rng.integers(len(choices)))])
    else:
        idx = int(rng.integers(len(PALETTE)))
    if exclude is not None and idx == exclude:
        idx = (idx + 1 + int(rng.integers(len(PALETTE) - 1))) % len(PALETTE)
    colour = np.clip(PALETTE[idx] + rng.normal(0, 0.05, 3), 0, 1).astype(np.float32)
    return colour, idx


def _paint(canvas: np.ndarray, mask: np.ndarray, weight: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> None:
    mix = c0[None, :] * (1 - weight[mask, None]) + c1[None, :] * weight[mask, None]
    canvas[mask] = mix


def render(seed: int, index: int, size: int = 96, colour_prior: float = WorldSpec.colour_prior,
           layout_prior: float = WorldSpec.layout_prior) -> Sample:
    """Render scene ``index`` of the world with ``seed``; a pure function of its arguments.

    Returns the uint8 image (size, size, 3), the VOC label map (things 1..8, background 0, boundary 255),
    the full label map (things 0..7, stuff 8..12) and templated captions. ``colour_prior`` and ``layout_prior``
    set how often classes take their preferred colours and places (see the module docstring).
    """
    rng = np.random.default_rng([int(seed), int(index)])
    H = W = size
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    canvas = np.zeros((H, W, 3), np.float32)
    n_things = len(THING_CLASSES)
    full = np.zeros((H, W), np.uint8)
    things = np.zeros((H, W), np.uint8)          # 0 = no thing, else thing id + 1

    # ---- 1-3 stuff regions separated by wavy, tilted boundaries, usually stacked in their natural order -------
    n_stuff = int(rng.choice([1, 2, 3], p=[0.25, 0.45, 0.30]))
    stuff_ids = rng.choice(len(STUFF_CLASSES), size=n_stuff, replace=False)
    if rng.random() < layout_prior:
        stuff_ids = sorted(stuff_ids, key=lambda i: STUFF_HEIGHT[STUFF_CLASSES[i]])
    cuts = np.sort(rng.uniform(0.2, 0.8, n_stuff - 1)) * H
    tilt = rng.uniform(-0.35, 0.35)
    region = np.zeros((H, W), np.int64)
    for k, cut in enumerate(cuts):
        wave = cut + tilt * (xx - W / 2) + rng.uniform(1, 5) * np.sin(2 * np.pi * xx / rng.uniform(25, 60)
                                                                       + rng.uniform(0, 6.3))
        region += (yy > wave).astype(np.int64)
    stuff_names = []
    for k, sid in enumerate(stuff_ids):
        m = region == k
        if not m.any():
            continue
        name = STUFF_CLASSES[sid]
        stuff_names.append(name)
        ang = rng.uniform(-0.15, 0.15)
        u = np.cos(ang) * xx + np.sin(ang) * yy
        v = -np.sin(ang) * xx + np.cos(ang) * yy
        c0, i0 = _jittered_colour(rng, preferred=CLASS_COLOURS[name], prior=colour_prior)
        c1, _ = _jittered_colour(rng, exclude=i0, preferred=CLASS_COLOURS[name], prior=colour_prior)
        _paint(canvas, m, _texture(name, u, v, rng), c0, c1)
        full[m] = n_things + sid

    # ---- things: object-centric (one large) to cluttered (up to 4, occluding) ------------------------------
    n_obj = int(rng.choice([1, 2, 3, 4], p=[0.35, 0.3, 0.2, 0.15]))
    objects = []
    for _ in range(n_obj):
        cid = int(rng.integers(n_things))
        name = THING_CLASSES[cid]
        radius = (rng.uniform(0.3, 0.44) if n_obj == 1 else rng.uniform(0.16, 0.3)) * size
        cx = rng.uniform(radius * 0.6, W - radius * 0.6)
        lo, hi = radius * 0.6, H - radius * 0.6
        if name in THING_HEIGHT and rng.random() < layout_prior:
            top, bottom = THING_HEIGHT[name]
            lo, hi = max(lo, top * H), max(min(hi, bottom * H), max(lo, top * H))
        cy = rng.uniform(lo, hi)
        theta = rng.uniform(-np.pi, np.pi) if name not in TWO_PART_THINGS else rng.uniform(-0.6, 0.6)
        aspect = rng.uniform(0.85, 1.15)
        ct, st = np.cos(theta), np.sin(theta)
        u = ct * (xx - cx) + st * (yy - cy)          # rotated pixel coordinates (texture frame)
        v = -st * (xx - cx) + ct * (yy - cy)
        parts = _thing_masks(name, u / (radius * aspect), v / (radius / aspect))
        textures = THING_TEXTURE[name] if isinstance(THING_TEXTURE[name], tuple) else (THING_TEXTURE[name],)
        prefer = CLASS_COLOURS[name]
        c0, i0 = _jittered_colour(rng, preferred=prefer, prior=colour_prior)
        colour_name = COLOUR_NAMES[i0]
        for part, tex in zip(parts, textures):
            if not part.any():
                continue
            c1, i1 = _jittered_colour(rng, exclude=i0, preferred=prefer, prior=colour_prior)
            if tex == "brick_small":
                weight = _texture("grid", u, v, rng)
            else:
                weight = _texture(tex, u, v, rng)
            _paint(canvas, part, weight, c0, c1)
            if len(parts) > 1:                       # parts of one object may differ in base colour too
                c0, i0 = _jittered_colour(rng, preferred=prefer, prior=colour_prior)
        mask = np.logical_or.reduce(parts)
        full[mask] = cid
        things[mask] = cid + 1
        objects.append({"class": name, "colour": colour_name, "radius": float(radius / size)})

    # ---- photometric nuisance: lighting gradient, blur, noise -------------------------------------------
    gdir = rng.uniform(-np.pi, np.pi)
    gradient = 1.0 + rng.uniform(0.0, 0.35) * ((np.cos(gdir) * (xx - W / 2) + np.sin(gdir) * (yy - H / 2)) / size)
    canvas *= gradient[..., None]
    blur = rng.uniform(0.0, 0.8)
    if blur > 0.15:
        canvas = ndimage.gaussian_filter(canvas, sigma=(blur, blur, 0))
    canvas += rng.normal(0, rng.uniform(0.0, 0.04), canvas.shape).astype(np.float32)
    image = (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8)

    # ---- VOC labels: things + background, 255 on a thin band where thing labels meet ----------------------
    voc = things.copy()
    grown = ndimage.maximum_filter(things, size=3)
    shrunk = ndimage.minimum_filter(things, size=3)
    voc[grown != shrunk] = 255

    captions = _captions(rng, objects, stuff_names)
    return Sample(image=image, voc=voc, full=full, captions=captions, objects=objects, stuff=stuff_names)


def _captions(rng: np.random.Generator, objects: list[dict], stuff: list[str]) -> list[str]:
    """Two templated captions naming the things (with colour/size attributes and synonyms) and the stuff."""
    out = []
    for _ in range(2):
        parts = []
        for obj in objects:
            syn = SYNONYMS[obj["class"]][int(rng.integers(len(SYNONYMS[obj["class"]])))]
            size_word = "large" if obj["radius"] > 0.3 else ("small" if obj["radius"] < 0.2 else "")
            attrs = [w for w in (size_word, obj["colour"] if rng.random() < 0.6 else "") if w]
            parts.append(" ".join(["a"] + attrs + [syn]))
        stuff_words = [SYNONYMS[s][int(rng.integers(len(SYNONYMS[s])))] for s in stuff]
        things_txt = ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1] if parts else "nothing"
        template = ["{t} on {s}", "a picture of {t} with {s}", "{t} in front of {s}"][int(rng.integers(3))]
        out.append(template.format(t=things_txt, s=" and ".join(stuff_words)))
    return out
