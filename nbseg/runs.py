"""Provenance written next to every result: seed, git revision, package versions, and what identifies the frozen
backbone (:func:`backbone_facts`: name, weights file, sha256, random init, one-line description)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy
import timm
import torch

from nbseg.io import sha256_file


def git_revision(path: str | Path | None = None) -> str:
    """The checkout's HEAD commit (with ``-dirty`` when it has uncommitted changes), or ``unknown``."""
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment_info() -> dict:
    """Versions of the packages that change numbers, and the machine."""
    info = {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": numpy.__version__,
            "platform": platform.platform(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    info["timm"] = timm.__version__
    return info


def provenance(seed: int | None = None, **extra) -> dict:
    return {"seed": seed, "git_revision": git_revision(), "environment": environment_info(), **extra}


def backbone_facts(backbone) -> dict:
    """What identifies a frozen backbone in a run: name, weights path, sha256 (of the file; of the state dict for hub
    or random-init weights), random init, and its one-line description. Every method's ``provenance()`` starts here."""
    sha = sha256_file(backbone.weights_path) if backbone.weights_path else backbone.weights_sha256
    return {"backbone": backbone.name, "weights_path": backbone.weights_path, "weights_sha256": sha,
            "random_init": backbone.random_init, "backbone_description": backbone.describe()}
