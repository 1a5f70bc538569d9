"""The bad-input catalogue (issue 20): what a new user gets wrong, run through the real ``nbseg`` command.

Each row of :data:`CATALOGUE` is one bad input: a ``prepare`` function that builds it in a fresh folder and returns
the command line and the files that must be unchanged afterwards, the expected exit code and a fragment of the
one-line message. :func:`test_catalogue` runs every row and compares the protected files by sha256. The tests after
the table check, per item of the issue, what a row cannot express (a repaired file's checksum, a metrics table
that kept its rows, a file a malicious pickle would have created, the modules ``nbseg --help`` imports).

Tiny everything: a 32-px world of 8 + 4 images, the embedded architecture at random init, 4 training steps.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

import nbseg.io
from nbseg.cli import main as nbseg_main
from nbseg.io import sha256_file

ALIGNSEG = {"random_init": True, "max_train_images": 8, "batch_size": 4, "epochs": 2, "global_size": 32,
            "local_size": 32, "n_prototypes": 4, "log_every": 1, "device": "cpu", "h": 0.2}
PRETRAIN = {"data": "world", "image_size": 32, "global_size": 16, "local_size": 8, "n_local": 2, "batch_size": 4,
            "epochs": 2, "warmup_epochs": 1, "out_dim": 32, "head_hidden_dim": 16, "bottleneck_dim": 8,
            "checkpoint_every": 1, "log_every": 1}
WORLD_ARGS = ["--size", "32", "--train", "3", "--val", "2", "--workers", "1"]


def pairs(values: dict) -> list[str]:
    return [f"{k}={v}" for k, v in values.items()]


# ----------------------------------------------------------------------------------------------------------
# What the rows work on (built once; a row that changes a run folder works on its own copy)
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from nbseg.world import WorldSpec, write_world

    root = tmp_path_factory.mktemp("bad_inputs")
    world = write_world(root / "world", WorldSpec(size=32, n_train=8, n_val=4), workers=1, progress=False)
    alignseg_args = pairs({**ALIGNSEG, "data_root": world})
    pretrain_args = pairs({**PRETRAIN, "data_root": world})
    flags = ["--no-eval", "--no-progress"]
    assert nbseg_main(["train", "alignseg", str(root / "alignseg"), *alignseg_args, *flags]) == 0
    assert nbseg_main(["train", "alignseg", str(root / "unfinished"), *alignseg_args, "max_steps=1", *flags]) == 0
    assert nbseg_main(["pretrain", str(root / "pretrain"), *pretrain_args, "max_steps=2", "--no-progress"]) == 0
    return {"world": world, "alignseg": root / "alignseg", "unfinished": root / "unfinished",
            "pretrain": root / "pretrain", "alignseg_args": alignseg_args, "pretrain_args": pretrain_args}


@dataclass
class Ctx:
    """A row's workspace: ``tmp`` (fresh), the shared runs in ``base``, and ``monkeypatch``."""

    tmp: Path
    base: dict
    monkeypatch: pytest.MonkeyPatch

    def copy(self, name: str) -> Path:
        target = self.tmp / name
        shutil.copytree(self.base[name], target)
        return target

    def images(self, folder: str = "imgs") -> Path:
        path = self.tmp / folder
        path.mkdir()
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path / "a.png")
        Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(path / "b.jpg")
        return path

    def segment(self, *args: str) -> list[str]:
        return ["segment", "--checkpoint", str(self.base["alignseg"]), *args, "--no-progress"]

    def full_disk(self, name_part: str = "") -> None:
        """Every write of a file whose name contains ``name_part`` fails as on a full disk."""
        real = nbseg.io._write_file

        def write(f, data, path):
            if name_part in Path(path).name:
                raise OSError(errno.ENOSPC, "No space left on device")
            real(f, data, path)

        self.monkeypatch.setattr(nbseg.io, "_write_file", write)


@dataclass(frozen=True)
class Case:
    name: str
    prepare: Callable[[Ctx], tuple[list[str], list[Path]]]  # -> (command line, files that must stay unchanged)
    code: int
    fragment: str


# ---- 1. outputs never overwrite the user's files ----------------------------------------------------------

def segment_into_input_folder(c):
    imgs = c.images()
    return c.segment(str(imgs), "--out", str(imgs)), sorted(imgs.iterdir())


def segment_file_into_its_folder(c):
    imgs = c.images()
    return c.segment(str(imgs / "a.png"), "--out", str(imgs)), sorted(imgs.iterdir())


def segment_over_existing_outputs(c):
    imgs, out = c.images(), c.tmp / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"the user's own a.png")
    return c.segment(str(imgs), "--out", str(out)), [out / "a.png", *imgs.iterdir()]


def segment_with_overwrite(c):
    imgs, out = c.images(), c.tmp / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"an earlier label map")
    return c.segment(str(imgs), "--out", str(out), "--overwrite"), sorted(imgs.iterdir())


def export_over_existing_file(c):
    (c.tmp / "w.pt").write_bytes(b"weights the user keeps")
    return ["pretrain", "export", str(c.base["pretrain"]), str(c.tmp / "w.pt")], [c.tmp / "w.pt"]


def export_over_its_checkpoint(c):
    run = c.copy("pretrain")
    return ["pretrain", "export", str(run), str(run / "checkpoint.pt"), "--overwrite"], [run / "checkpoint.pt"]


def evaluate_json_over_existing_file(c):
    (c.tmp / "m.json").write_text('{"mine": 1}')
    return (["evaluate", str(c.base["alignseg"]), "--json", str(c.tmp / "m.json"), "--no-kmeans", "--limit", "2",
             "--no-progress"], [c.tmp / "m.json"])


# ---- 2. a notebook run never destroys the previous run -----------------------------------------------------

FAILS_ON_NEGATIVE_N = "assert N >= 0, 'N must be >= 0'\n"


def _previous_unit(c) -> tuple[Path, Path, list[Path]]:
    from tests.test_notebook_runner import WRITE_METRICS, write_notebook

    notebooks, out = c.tmp / "nbs", c.tmp / "out"
    notebooks.mkdir()
    write_notebook(notebooks, "00_nb", FAILS_ON_NEGATIVE_N, WRITE_METRICS)
    unit = out / "00_nb"
    unit.mkdir(parents=True)
    (unit / "00_nb.ipynb").write_text("the good executed notebook")
    (unit / "metrics.json").write_text(json.dumps({"n_squared": 9}))
    (unit / "figure.png").write_bytes(b"a figure of the good run")
    (unit / "run_info.json").write_text(json.dumps({"status": "ok"}))
    return notebooks, out, [unit / "00_nb.ipynb", unit / "metrics.json", unit / "figure.png"]


def notebook_failing_into_a_good_unit(c):
    notebooks, out, kept = _previous_unit(c)
    return (["notebooks", "run", "00", "--notebooks-dir", str(notebooks), "--out", str(out), "-p", "N=-1",
             "--timeout", "120"], kept)


def notebook_bad_parameter_type(c):
    notebooks, out, kept = _previous_unit(c)
    return ["notebooks", "run", "00", "--notebooks-dir", str(notebooks), "--out", str(out), "-p", "N=abc"], kept


# ---- 3. images: read in every mode, or refused by name -----------------------------------------------------

def segment_32bit_integer_image(c):
    imgs = c.tmp / "imgs"
    imgs.mkdir()
    Image.fromarray(np.full((32, 32), 200_000, dtype=np.int32)).save(imgs / "deep.tif")
    return c.segment(str(imgs), "--out", str(c.tmp / "out")), [imgs / "deep.tif"]


def segment_float_image_out_of_range(c):
    imgs = c.tmp / "imgs"
    imgs.mkdir()
    Image.fromarray(np.full((32, 32), 7.5, dtype=np.float32)).save(imgs / "hdr.tif")
    return c.segment(str(imgs), "--out", str(c.tmp / "out")), [imgs / "hdr.tif"]


def segment_corrupt_image(c):
    imgs = c.images()
    (imgs / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return c.segment(str(imgs), "--out", str(c.tmp / "out")), sorted(imgs.iterdir())


def eval_colour_label_maps(c):
    gt, pred = c.tmp / "gt", c.tmp / "pred"
    gt.mkdir()
    pred.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(gt / "x.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(pred / "x.png")
    return ["eval", "--gt", str(gt), "--pred", str(pred)], [gt / "x.png", pred / "x.png"]


def eval_unmatched_names(c):
    gt, pred = c.tmp / "gt", c.tmp / "pred"
    gt.mkdir()
    pred.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(gt / "x.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(pred / "y.png")
    return ["eval", "--gt", str(gt), "--pred", str(pred)], [gt / "x.png", pred / "y.png"]


# ---- 4. a full disk is one line: the file, the bytes, how to resume -----------------------------------------

def pretrain_disk_full_at_checkpoint(c):
    run = c.copy("pretrain")
    c.full_disk("checkpoint.pt")
    return ["pretrain", str(run), *c.base["pretrain_args"], "--no-progress"], [run / "checkpoint.pt"]


def train_disk_full_at_checkpoint(c):
    run = c.copy("unfinished")
    c.full_disk("checkpoint.pt")
    return (["train", "alignseg", str(run), *c.base["alignseg_args"], "--no-eval", "--no-progress"],
            [run / "checkpoint.pt"])


def segment_disk_full(c):
    imgs = c.images()
    c.full_disk()
    return c.segment(str(imgs), "--out", str(c.tmp / "out")), sorted(imgs.iterdir())


# ---- 5. run folders of another command are named -------------------------------------------------------------

def export_of_a_method_run(c):
    return ["pretrain", "export", str(c.base["alignseg"]), str(c.tmp / "w.pt")], [c.base["alignseg"] / "checkpoint.pt"]


def pretrain_into_an_alignseg_run(c):
    run = c.copy("alignseg")
    return ["pretrain", str(run), *c.base["pretrain_args"], "--no-progress"], [run / "checkpoint.pt", run / "log.csv"]


def alignseg_into_a_pretrain_run(c):
    run = c.copy("pretrain")
    return (["train", "alignseg", str(run), *c.base["alignseg_args"], "--no-progress"],
            [run / "checkpoint.pt", run / "config.yaml"])


def dcn_into_an_alignseg_run(c):
    run = c.copy("alignseg")
    return ["train", "dcn", str(run), "random_init=true", "--no-progress"], [run / "checkpoint.pt"]


def export_of_a_folder_without_run(c):
    (c.tmp / "empty").mkdir()
    return ["pretrain", "export", str(c.tmp / "empty"), str(c.tmp / "w.pt")], []


# ---- 6. the world root is verified ------------------------------------------------------------------------

def world_with_a_truncated_image(c):
    root = c.tmp / "w"
    assert nbseg_main(["world", str(root), *WORLD_ARGS]) == 0
    broken = root / "JPEGImages" / "w0000001.png"
    broken.write_bytes(broken.read_bytes()[:40])
    return ["world", str(root), *WORLD_ARGS], [root / "JPEGImages" / "w0000000.png", root / "classes.json"]


def world_too_small(c):
    return ["world", str(c.tmp / "w"), "--size", "8"], []


# ---- 7. weights are unpickled only with consent ---------------------------------------------------------------

class RunsCode:
    """Unpickling this creates a folder: what a malicious weights file could do instead."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return os.makedirs, (self.path,)


def embedded_state() -> dict:
    from nbseg.backbones import EMBEDDED_WEIGHTS, read_weights_file

    return read_weights_file(EMBEDDED_WEIGHTS)


def weights_that_run_code(c):
    torch.save({"state_dict": embedded_state(), "payload": RunsCode(c.tmp / "pwned")}, c.tmp / "evil.pth")
    return ["backbones", "info", "embedded", "--weights", str(c.tmp / "evil.pth")], [c.tmp / "evil.pth"]


def weights_with_python_objects(c):
    from fractions import Fraction

    torch.save({"state_dict": embedded_state(), "lr": Fraction(1, 3)}, c.tmp / "odd.pth")
    return ["backbones", "info", "embedded", "--weights", str(c.tmp / "odd.pth")], [c.tmp / "odd.pth"]


def weights_with_python_objects_allowed(c):
    argv, kept = weights_with_python_objects(c)
    return ["--allow-unsafe-pickle", *argv], kept


def weights_that_are_text(c):
    (c.tmp / "weights.pth").write_text("404: Not Found\n")
    return ["backbones", "info", "embedded", "--weights", str(c.tmp / "weights.pth")], [c.tmp / "weights.pth"]


def weights_missing(c):
    return ["backbones", "info", "embedded", "--weights", str(c.tmp / "nope.pth")], []


# ---- 8. the smaller ones -------------------------------------------------------------------------------------

def data_check_without_val(c):
    root = c.tmp / "world"
    shutil.copytree(c.base["world"], root)
    (root / "ImageSets" / "Segmentation" / "val.txt").unlink()
    return ["data", "check", "world", str(root)], [root / "ImageSets" / "Segmentation" / "train.txt"]


def pretrain_with_the_old_root_key(c):
    return ["pretrain", str(c.tmp / "run"), f"root={c.base['world']}"], []


def resume_with_a_changed_key(c):
    run = c.copy("unfinished")
    return (["train", "alignseg", str(run), *c.base["alignseg_args"], "n_prototypes=5", "--no-progress"],
            [run / "checkpoint.pt", run / "log.csv"])


def resume_says_so(c):
    run = c.copy("unfinished")
    return ["train", "alignseg", str(run), *c.base["alignseg_args"], "--no-eval", "--no-progress"], []


def evaluate_unfinished_run(c):
    return (["evaluate", str(c.base["unfinished"]), "--no-kmeans", "--limit", "2", "--no-progress"],
            [c.base["unfinished"] / "checkpoint.pt"])


def evaluate_missing_checkpoint(c):
    return ["evaluate", str(c.tmp / "no_run")], []


def train_unknown_key(c):
    return ["train", "alignseg", str(c.tmp / "run"), "n_protos=4"], []


def segment_missing_input(c):
    return c.segment(str(c.tmp / "missing.jpg"), "--out", str(c.tmp / "out")), []


def data_check_missing_root(c):
    return ["data", "check", "voc", str(c.tmp / "VOC2012")], []


CATALOGUE = [
    Case("segment --out is the input folder", segment_into_input_folder, 2, "which holds the inputs"),
    Case("segment --out is the folder of an input file", segment_file_into_its_folder, 2, "which holds the inputs"),
    Case("segment over existing outputs", segment_over_existing_outputs, 2, "exist already"),
    Case("segment --overwrite replaces earlier outputs", segment_with_overwrite, 0, "segmented 2 image(s)"),
    Case("pretrain export over an existing file", export_over_existing_file, 2, "exist already"),
    Case("pretrain export over its own checkpoint", export_over_its_checkpoint, 2, "is one of the inputs"),
    Case("evaluate --json over an existing file", evaluate_json_over_existing_file, 2, "exist already"),
    Case("notebook failing into a folder with a good run", notebook_failing_into_a_good_unit, 1,
         "1 of 1 notebooks failed"),
    Case("notebook parameter of the wrong type", notebook_bad_parameter_type, 2, "parameter N expects int"),
    Case("segment a 32-bit integer image", segment_32bit_integer_image, 1, "32-bit integer image"),
    Case("segment a float image beyond [0, 1]", segment_float_image_out_of_range, 1, "values outside [0, 1]"),
    Case("segment a corrupt image", segment_corrupt_image, 1, "c.png cannot be read"),
    Case("eval with colour label maps", eval_colour_label_maps, 2, "(colours)"),
    Case("eval with unmatched file names", eval_unmatched_names, 2, "do not match"),
    Case("pretrain: disk full at a checkpoint", pretrain_disk_full_at_checkpoint, 2,
         "checkpoint.pt: no space left on the device"),
    Case("train: disk full at a checkpoint", train_disk_full_at_checkpoint, 2, "is intact: free some space"),
    Case("segment: disk full", segment_disk_full, 2, "needed"),
    Case("pretrain export of an AlignSeg run", export_of_a_method_run, 2, "holds an AlignSeg training run"),
    Case("pretrain into an AlignSeg run folder", pretrain_into_an_alignseg_run, 2, "holds an AlignSeg training run"),
    Case("train alignseg into a pretrain run folder", alignseg_into_a_pretrain_run, 2,
         "holds a DINO pretraining run"),
    Case("train dcn into an AlignSeg run folder", dcn_into_an_alignseg_run, 2, "holds an AlignSeg training run"),
    Case("pretrain export of a folder without a run", export_of_a_folder_without_run, 2, "has no checkpoint.pt"),
    Case("world over a root with a truncated image", world_with_a_truncated_image, 0,
         "1 damaged file(s) regenerated (JPEGImages/w0000001.png)"),
    Case("world with a size too small", world_too_small, 2, "need --size >= 16"),
    Case("weights file whose unpickling runs code", weights_that_run_code, 2, "holds Python objects beyond tensors"),
    Case("weights file with Python objects", weights_with_python_objects, 2, "--allow-unsafe-pickle"),
    Case("weights file with Python objects, allowed", weights_with_python_objects_allowed, 0, '"patch_size": 8'),
    Case("weights file that is text", weights_that_are_text, 2, "is not a PyTorch weights file (it is text"),
    Case("weights file missing", weights_missing, 2, "does not exist"),
    Case("data check of a root without val.txt", data_check_without_val, 0, "absent: val"),
    Case("pretrain with the old key root=", pretrain_with_the_old_root_key, 2, "'root' is now called 'data_root'"),
    Case("resume with a changed config key", resume_with_a_changed_key, 2, "n_prototypes: saved 4, now 5"),
    Case("resume says where it resumed", resume_says_so, 0, "resumed from step 1 of 4"),
    Case("evaluate an unfinished run", evaluate_unfinished_run, 0, "unfinished run (step 1 of 4)"),
    Case("evaluate a missing checkpoint", evaluate_missing_checkpoint, 2, "does not exist"),
    Case("train with an unknown key", train_unknown_key, 2, "unknown key(s) ['n_protos']"),
    Case("segment a missing input", segment_missing_input, 2, "does not exist"),
    Case("data check of a missing root", data_check_missing_root, 2, "does not exist"),
]


def _checksums(paths: list[Path]) -> dict[Path, str | None]:
    return {p: sha256_file(p) if p.is_file() else None for p in paths}


@pytest.mark.parametrize("case", CATALOGUE, ids=[case.name for case in CATALOGUE])
def test_catalogue(case, base, tmp_path, monkeypatch, capsys):
    argv, protected = case.prepare(Ctx(tmp_path, base, monkeypatch))
    before = _checksums(protected)
    assert all(before.values()), "a protected file of the row does not exist"
    capsys.readouterr()
    code = nbseg_main(argv)
    out, err = capsys.readouterr()
    assert code == case.code, out + err
    assert case.fragment in out + err, out + err
    assert _checksums(protected) == before
    if code == 2:
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 3, err   # one line (plus a list)


def test_catalogue_has_a_row_per_item():
    assert len(CATALOGUE) >= 35 and len({case.name for case in CATALOGUE}) == len(CATALOGUE)
