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


def pretrain_resume_says_so(c):
    run = c.copy("pretrain")
    return ["pretrain", str(run), *c.base["pretrain_args"], "--no-progress"], []


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
    Case("pretrain resume says where it resumed", pretrain_resume_says_so, 0, "resumed from step 2 of 4"),
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


# ----------------------------------------------------------------------------------------------------------
# Per item: what a row of the table cannot show
# ----------------------------------------------------------------------------------------------------------

def test_1_check_outputs_refuses_before_anything_is_written(tmp_path):
    from nbseg.errors import OutputError
    from nbseg.io import check_outputs

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.jpg").write_bytes(b"photo")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x.png").write_bytes(b"old")
    with pytest.raises(OutputError, match="holds the inputs"):
        check_outputs([tmp_path / "in" / "x.png"], inputs=[tmp_path / "in"])
    with pytest.raises(OutputError, match=r"1 output file\(s\) exist already .*x\.png.*--overwrite"):
        check_outputs([tmp_path / "out" / "x.png", tmp_path / "out" / "y.png"], inputs=[tmp_path / "in"])
    assert check_outputs([tmp_path / "out" / "x.png"], inputs=[tmp_path / "in"], overwrite=True)
    assert check_outputs([tmp_path / "in" / "sub" / "x.png"], inputs=[tmp_path / "in"])  # a sub-folder is fine


@pytest.mark.notebook
def test_2_notebook_units_are_replaced_only_on_success(tmp_path):
    """A failed rerun keeps the good unit and its rows; running one notebook keeps the others' rows; progress bars
    in the executed copy reach their end."""
    import pandas as pd

    import nbseg.notebook_runner as runner
    from nbseg.errors import NbsegError
    from tests.test_notebook_runner import WRITE_METRICS, write_notebook

    progress = "from nbseg.progress import tqdm\nfor _ in tqdm(range(10), desc='steps'):\n    pass\n"
    first = write_notebook(tmp_path, "00_first", FAILS_ON_NEGATIVE_N, WRITE_METRICS, progress)
    second = write_notebook(tmp_path, "01_second", WRITE_METRICS)
    out = tmp_path / "out"
    runner.run_notebooks([first], out_dir=out, overrides={"N": 3}, timeout=120)
    good_copy = sha256_file(out / "00_first" / "00_first.ipynb")
    executed = (out / "00_first" / "00_first.ipynb").read_text()
    assert "10/10" in executed                            # a text bar, at its end (a widget would stay at 0/10)
    runner.run_notebooks([second], out_dir=out, timeout=120)
    table = pd.read_csv(out / "metrics.csv")
    assert set(table.notebook) == {"00_first", "01_second"}   # running 01 alone kept 00's rows
    with pytest.raises(NbsegError, match="1 of 1 notebooks failed"):
        runner.run_notebooks([first], out_dir=out, overrides={"N": -1}, timeout=120)
    assert sha256_file(out / "00_first" / "00_first.ipynb") == good_copy
    assert json.loads((out / "00_first" / "metrics.json").read_text())["n_squared"] == 9
    assert (out / "00_first.failed" / "00_first.ipynb").is_file()          # the failed run, to inspect
    table = pd.read_csv(out / "metrics.csv")
    assert set(table.notebook) == {"00_first", "01_second"} and len(table) > 2  # not truncated by the failure
    assert not list(out.glob(".*previous"))


def test_2_a_killed_batch_gets_its_previous_unit_back(tmp_path):
    from nbseg.notebook_runner import units

    unit = tmp_path / "00_a"
    unit.mkdir()
    (unit / "result.txt").write_text("good")
    (unit / "run").mkdir()
    (unit / "run" / "checkpoint.pt").write_bytes(b"ckpt")
    previous = units.begin(unit)
    assert (unit / "run" / "checkpoint.pt").read_bytes() == b"ckpt"      # a training run resumes in place
    assert not (unit / "result.txt").exists()                           # the rest does not mix into the new run
    (unit / "partial.txt").write_text("killed here")
    assert previous.exists()
    again = units.begin(unit)                                            # the next batch, after a kill -9
    assert (again / "result.txt").read_text() == "good" and not (again / "partial.txt").exists()
    assert not (unit / "partial.txt").exists()                           # the killed run is not a result
    units.fail(unit, again)                                              # this run fails too: the good one is back
    assert (unit / "result.txt").read_text() == "good"
    assert (units.failed_dir(unit) / "run" / "checkpoint.pt").is_file()


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "LA", "I;16", "I", "F", "1"])
def test_3_one_reader_reads_every_mode_with_its_range(tmp_path, mode):
    """Every mode comes out in [0, 1] with the value it holds (16-bit: not white), through every command's path."""
    from nbseg.data.base import read_image
    from nbseg.methods.segment import read_rgb as segment_reader

    grey = np.tile(np.linspace(0, 1, 16, dtype=np.float32), (8, 1))           # (8, 16) ramp
    if mode in ("I;16", "I"):
        image = Image.fromarray((grey * 65535).round().astype(np.uint16))
        if mode == "I":
            image = image.convert("I")
    elif mode == "F":
        image = Image.fromarray(grey)
    elif mode == "1":
        image = Image.fromarray(grey > 0.5)                                   # 1-bit, without dithering
    else:
        image = Image.fromarray((grey * 255).round().astype(np.uint8)).convert(mode)
    path = tmp_path / ("x.tif" if mode in ("F", "I") else "x.png")
    image.save(path)
    rgb = read_image(path)
    assert rgb.shape == (3, 8, 16) and rgb.dtype == torch.float32
    expected = torch.from_numpy(grey > 0.5).float() if mode == "1" else torch.from_numpy(grey)
    torch.testing.assert_close(rgb[0], expected, atol=1 / 200, rtol=0)
    torch.testing.assert_close(segment_reader(path), rgb)


def test_3_sixteen_bit_png_is_not_read_as_white(tmp_path):
    from nbseg.data.images import read_rgb

    Image.fromarray(np.full((4, 4), 16384, dtype=np.uint16)).save(tmp_path / "a.png")
    assert abs(read_rgb(tmp_path / "a.png").mean().item() - 0.25) < 1e-3


def test_3_exif_orientation_is_applied_to_images_and_labels(tmp_path):
    from nbseg.data.images import read_label_array, read_rgb

    exif = Image.Exif()
    exif[0x0112] = 6                                   # "rotate 90 degrees clockwise to display"
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(tmp_path / "photo.jpg", exif=exif)
    label = Image.fromarray(np.arange(200, dtype=np.uint8).reshape(10, 20) % 3)
    label.save(tmp_path / "label.png", exif=exif)
    assert read_rgb(tmp_path / "photo.jpg").shape == (3, 20, 10)
    assert read_label_array(tmp_path / "label.png").shape == (20, 10)


def test_3_eval_reads_sixteen_bit_label_maps(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    labels = np.arange(64, dtype=np.uint16).reshape(8, 8) % 2 + 300          # ids beyond 8 bits
    Image.fromarray(labels).save(gt / "x.png")
    Image.fromarray((labels - 300).astype(np.uint8)).save(pred / "x.png")
    assert nbseg_main(["eval", "--gt", str(gt), "--pred", str(pred), "--ignore", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["miou"] == pytest.approx(1.0)


def test_4_full_disk_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    from nbseg.errors import StorageError
    from nbseg.io import atomic_write_bytes

    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"previous checkpoint")

    def full(f, data, path):
        f.write(data[:10])                       # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nbseg.io, "_write_file", full)
    with pytest.raises(StorageError) as err:
        atomic_write_bytes(target, b"x" * 500, resume="run the same command again to resume")
    message = str(err.value)
    assert str(target) in message and "500 bytes needed" in message and "run the same command again" in message
    assert "\n" not in message
    assert target.read_bytes() == b"previous checkpoint" and sorted(os.listdir(tmp_path)) == ["checkpoint.pt"]


def test_5_export_of_a_method_run_names_it(base, tmp_path):
    from nbseg.errors import ConfigError
    from nbseg.pretrain.train import export_teacher

    with pytest.raises(ConfigError, match="holds an AlignSeg training run"):
        export_teacher(base["alignseg"], tmp_path / "w.pt")
    assert not (tmp_path / "w.pt").exists()


def test_6_world_regenerates_exactly_what_is_damaged(tmp_path):
    from nbseg.world import WorldSpec, ensure_world, is_complete, write_world

    spec = WorldSpec(seed=1, size=32, n_train=3, n_val=2)
    root = write_world(tmp_path / "w", spec, workers=1, progress=False)
    record = json.loads((root / "world.json").read_text())["files"]
    image, other = root / "JPEGImages" / "w0000002.png", root / "SegmentationClass" / "w0000000.png"
    stamp = other.stat().st_mtime_ns
    original = sha256_file(image)
    assert record["JPEGImages/w0000002.png"]["sha256"] == original
    image.write_bytes(image.read_bytes()[:50])                    # truncated: caught by its size on every call
    assert not is_complete(root, spec)
    ensure_world(root, spec, progress=False)
    assert sha256_file(image) == original and other.stat().st_mtime_ns == stamp
    flipped = bytearray(image.read_bytes())
    flipped[-20] ^= 0xFF                                            # same size, other bytes: caught by sha256
    image.write_bytes(bytes(flipped))
    assert is_complete(root, spec) and not is_complete(root, spec, checksums=True)
    write_world(root, spec, checksums=True, progress=False)
    assert sha256_file(image) == original


def test_7_weights_run_no_code_without_consent(tmp_path, capsys):
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": embedded_state(), "payload": RunsCode(tmp_path / "pwned")}, evil)
    assert nbseg_main(["backbones", "info", "embedded", "--weights", str(evil)]) == 2
    assert not (tmp_path / "pwned").exists()
    # the flag really is what gates it: with consent the file is unpickled in full (and its code runs)
    nbseg_main(["--allow-unsafe-pickle", "backbones", "info", "embedded", "--weights", str(evil)])
    assert (tmp_path / "pwned").exists()
    from nbseg.consent import unsafe_pickle_allowed

    assert not unsafe_pickle_allowed()                              # consent lasts one command


def test_7_help_of_the_flag_says_why_it_is_dangerous(capsys):
    with pytest.raises(SystemExit):
        nbseg_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--allow-unsafe-pickle" in text and "DANGEROUS" in text and "runs any code the file contains" in text


def test_7_dino_training_checkpoints_still_load_safely(tmp_path):
    from nbseg import backbones
    from tests.test_backbones import dino_training_checkpoint

    model = backbones.create_model(backbones.EMBEDDED_ARCH, pretrained=False)
    torch.save(dino_training_checkpoint(model), tmp_path / "checkpoint.pth")   # carries an argparse.Namespace
    state = backbones.read_weights_file(tmp_path / "checkpoint.pth", allow_unsafe_pickle=False)
    assert set(state) >= set(model.state_dict())


def test_8_config_differences_are_reported_before_feature_extraction(base, tmp_path, monkeypatch):
    import nbseg.probes
    from nbseg.errors import ConfigError
    from nbseg.methods.alignseg.evaluation import load_alignseg_config, run_alignseg

    def no_extraction(*args, **kwargs):
        raise AssertionError("features were extracted before the config was checked")

    monkeypatch.setattr(nbseg.probes, "extract_dataset", no_extraction)
    run = tmp_path / "run"
    shutil.copytree(base["unfinished"], run)
    cfg = load_alignseg_config("world", {**ALIGNSEG, "data_root": str(base["world"]), "n_prototypes": 5})
    with pytest.raises(ConfigError, match="n_prototypes: saved 4, now 5"):
        run_alignseg(cfg, run, progress=False)


def test_8_one_name_for_the_dataset_root():
    from nbseg.methods.alignseg import AlignSegConfig
    from nbseg.methods.dcn import DCNConfig
    from nbseg.pretrain.train import PretrainConfig, stored_config

    for cls in (PretrainConfig, AlignSegConfig, DCNConfig):
        assert "data_root" in cls.__dataclass_fields__ and "root" not in cls.__dataclass_fields__
    assert stored_config({"root": "/data/x", "seed": 1}) == {"data_root": "/data/x", "seed": 1}  # older runs resume


def test_8_help_imports_no_command_module():
    """`nbseg --help` lists every command without importing torch, pandas or a command module (lazy at the CLI)."""
    code = ("import sys\nfrom nbseg.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'pandas', 'numpy', 'nbseg.world', 'nbseg.methods.cli') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert "segment" in result.stdout and "pretrain" in result.stdout


def test_8_command_table_says_what_each_module_registers():
    import argparse

    from nbseg.cli import COMMANDS, build_parser

    parser = build_parser(everything=True)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    registered = {choice.dest: choice.help for choice in sub._choices_actions}
    assert registered == {name: text for name, (_, text) in COMMANDS.items()}
