"""The diagnostic tools: the supervised ceiling writes a backbone weights file that nbseg loads."""
import json
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def test_supervised_ceiling_writes_a_loadable_backbone(tmp_path):
    from nbseg.backbones import EMBEDDED_ARCH, load
    from nbseg.world import ensure_world

    ensure_world()
    out = tmp_path / "sup.pt"
    res = subprocess.run([sys.executable, str(REPO / "tools/supervised_ceiling.py"), str(out), "--epochs", "1",
                          "--limit", "64", "--batch-size", "32", "--device", "cpu"],
                         capture_output=True, text=True, timeout=600, check=True)
    meta = json.loads(res.stdout.strip().splitlines()[-1])
    assert 0.0 < meta["val_pixel_acc_trained_head"] < 1.0 and "WITH labels" in meta["source"]
    backbone = load(EMBEDDED_ARCH, weights=out)
    assert backbone.extract(torch.rand(1, 3, 32, 32)).patches.shape == (1, 4, 4, 192)
    assert torch.load(out, weights_only=False)["meta"]["epochs"] == 1
