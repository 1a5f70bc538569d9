"""nbseg reproduce: the plan (parameters, keys, presets, torchrun), the executor (skip, re-run one unit, failures and
dependencies, kill and resume) and the report (every link and image resolves), then one smoke reproduction of two
real notebooks asserting on the collected table (what `make test` runs).

Most tests use tiny notebooks written here (a kernel start each, seconds); the real notebooks run once."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import nbseg.cli
from nbseg.errors import ConfigError
from nbseg.reproduce import reproduce
from nbseg.reproduce.plan import build_plan, preset_parameters, presets
from nbseg.reproduce.run import FAILURES, command, threads_per_job

PARAMETERS = 'SMOKE = False\nINTERACTIVE = False\nSEED = 0\nOUT_DIR = "x"\n'
BODY = ("import json, pathlib\nimport matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "out = pathlib.Path(OUT_DIR); out.mkdir(parents=True, exist_ok=True)\n"
        "fig, ax = plt.subplots(figsize=(2, 2)); ax.plot([0, N]); fig.savefig(out / 'curve.png'); plt.close(fig)\n"
        "import os\nthreads = os.environ.get('OMP_NUM_THREADS')\n"
        "(out / 'metrics.json').write_text(json.dumps({'ratio': 1 / N, 'n': N, 'smoke': SMOKE, 'threads': threads}))\n")


def write_notebooks(folder: Path, **defaults: int) -> Path:
    """One tiny notebook per ``stem=N``: a figure and metrics.json; ``N=0`` raises ZeroDivisionError in code
    cell 2."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, n in defaults.items():
        parameters = new_code_cell(PARAMETERS + f"N = {n}\n")
        parameters.metadata["tags"] = ["parameters"]
        nb = new_notebook(cells=[new_markdown_cell(f"# {stem}"), parameters, new_code_cell(BODY)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, folder / f"{stem}.ipynb")
    return folder


def statuses(summary) -> dict[str, str]:
    return {o.unit: o.status for o in summary.outcomes}


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory):
    return write_notebooks(tmp_path_factory.mktemp("nb"), **{"00_alpha": 2, "01_beta": 4})


def plan_of(notebooks, **parameters):
    return build_plan("smoke", ["0"], parameters, notebooks_dir=notebooks)


# ----------------------------------------------------------------------------------------------------------------
# the plan (no kernel)


def test_the_world_unit_writes_both_renders_and_is_redone_when_one_is_gone(tmp_path, monkeypatch):
    import shutil

    import nbseg.world
    from nbseg.reproduce.run import outputs_present, unit_dir
    from nbseg.reproduce.unit import KINDS

    monkeypatch.setenv("NBSEG_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(nbseg.world, "default_spec",      # stands in for the 2,300-image renders
                        lambda size=None: nbseg.world.WorldSpec(n_train=1, n_val=1, size=size or 96))
    unit = build_plan("smoke", ["01"]).unit("world")
    assert unit.parameters == {"sizes": [96, 192]}           # a probe notebook reads the probe render
    work = unit_dir(tmp_path / "out", unit)
    work.mkdir(parents=True)
    assert KINDS["world"]({"parameters": unit.parameters}, work) == {"status": "ok"}
    assert outputs_present(tmp_path / "out", unit)
    assert (tmp_path / "data" / "world" / "world.json").is_file()
    shutil.rmtree(tmp_path / "data" / "world_192px")        # the probe notebooks' render
    assert not outputs_present(tmp_path / "out", unit)
    # Units that read only the training render (methods, claims, a probe notebook told WORLD_SIZE=96) need no more.
    assert build_plan("smoke", ["ablate-dcn", "claims"]).unit("world").parameters == {"sizes": [96]}
    assert build_plan("smoke", ["01"], {"WORLD_SIZE": 96}).unit("world").parameters == {"sizes": [96]}


def test_plan_checks_parameters_before_anything_runs(notebooks):
    plan = plan_of(notebooks)
    assert [u.name for u in plan.units] == ["00_alpha", "01_beta"] and plan.unit("01_beta").deps == ()
    real = build_plan("smoke", ["01", "ablate-dcn"])          # units that read the default world wait for it
    assert [u.name for u in real.units] == ["world", "01_attention_thresholds", "ablate-dcn"]
    assert all(u.deps == ("world",) for u in real.units[1:])
    with pytest.raises(ConfigError, match=r"01_beta: parameter N expects int .* got 'many'"):
        plan_of(notebooks, **{"01_beta:N": "many"})
    with pytest.raises(ConfigError, match="NSTEPS are taken by no selected unit"):
        plan_of(notebooks, NSTEPS=3)
    with pytest.raises(ConfigError, match="no selected unit is named '07_gamma'"):
        plan_of(notebooks, **{"07_gamma:N": 1})
    with pytest.raises(ConfigError, match="--only 'nothing' names no unit"):
        build_plan("smoke", ["nothing"], notebooks_dir=notebooks)
    with pytest.raises(ConfigError, match="ablate-dcn: parameter LR expects float"):
        build_plan("smoke", ["ablate-dcn"], {"LR": "fast"})


def test_keys_change_only_with_what_the_unit_depends_on(notebooks):
    base = {u.name: u.key for u in plan_of(notebooks).units}
    assert base == {u.name: u.key for u in plan_of(notebooks).units}           # deterministic
    one = {u.name: u.key for u in plan_of(notebooks, **{"01_beta:N": 5}).units}
    assert [n for n in base if base[n] != one[n]] == ["01_beta"]
    every = {u.name: u.key for u in plan_of(notebooks, N=5).units}             # a global key: every taker
    assert [n for n in base if base[n] != every[n]] == ["00_alpha", "01_beta"]
    full = {u.name: u.key for u in build_plan("full", ["0"], notebooks_dir=notebooks).units}
    assert full["00_alpha"] != base["00_alpha"]


def test_presets_come_from_the_shipped_configs(tmp_path):
    assert {"alignseg-voc", "transfgu-cocostuff27", "dcn-voc", "pgseg-voc", "san-potsdam"} <= set(presets())
    method, values = preset_parameters("dcn-voc")
    assert method == "dcn" and values["CONFIG"] == "voc" and values["BACKBONE"] == "vit_small_patch8_224.dino"
    with pytest.raises(ConfigError, match="pass -p DATA_ROOT=PATH"):
        build_plan("smoke", None, {}, "dcn-voc")
    with pytest.raises(ConfigError, match="unknown preset 'dcn-mars'; choose one of"):
        build_plan("smoke", None, {}, "dcn-mars")
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("a\n")
    plan = build_plan("smoke", None, {"DATA_ROOT": str(tmp_path), "BACKBONE": "embedded"}, "dcn-voc")
    names = [u.name for u in plan.units]
    assert "world" not in names and "claims" not in names and "ablate-alignseg" not in names
    assert "11_dcn" in names and "10_alignseg" not in names and "ablate-dcn" in names
    dcn = plan.unit("ablate-dcn")
    assert dcn.parameters == {"CONFIG": "voc", "BACKBONE": "embedded", "WEIGHTS": None, "DATA_ROOT": str(tmp_path)}
    assert plan.unit("11_dcn").parameters["DATASET"] == "voc"                    # -p BACKBONE overrode the preset
    assert plan.unit("11_dcn").parameters["BACKBONE"] == "embedded"


def test_training_units_run_under_torchrun_with_gpus(tmp_path):
    plan = build_plan("smoke", ["ablate-san", "00"])
    task = tmp_path / "task.json"
    ablate, notebook = plan.unit("ablate-san"), plan.unit("00_quickstart")
    cmd = command(ablate, task, gpus=4)
    assert cmd[0] == str(Path(sys.executable).parent / "torchrun") and Path(cmd[0]).is_file()
    assert cmd[1:] == ["--standalone", "--nproc_per_node=4", "-m", "nbseg.reproduce.unit", str(task)]
    assert command(notebook, task, gpus=4) == [sys.executable, "-m", "nbseg.reproduce.unit", str(task)]
    assert command(ablate, task, gpus=0)[:2] == [sys.executable, "-m"]
    assert threads_per_job(10_000) == 1


# ----------------------------------------------------------------------------------------------------------------
# the executor


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.targets.append(attrs["src"])
        elif tag == "a":
            self.targets.append(attrs["href"])


def test_second_run_skips_a_changed_parameter_reruns_one_and_the_report_resolves(notebooks, tmp_path):
    out = tmp_path / "out"
    first = reproduce(out, plan_of(notebooks))
    assert statuses(first) == {"00_alpha": "ok", "01_beta": "ok"}
    table = pd.read_csv(out / "metrics.csv")
    ratio = table[(table.unit == "01_beta") & (table.metric == "ratio")]
    assert float(ratio.value.iloc[0]) == pytest.approx(0.25) and ratio.backbone.iloc[0] == "embedded"
    threads = table[table.metric == "threads"].value.astype(int).tolist()
    assert threads == [threads_per_job(1)] * 2                       # one job: every core's thread

    again = reproduce(out, plan_of(notebooks))
    assert set(statuses(again).values()) == {"cached"} and again.wall_s < 5

    changed = reproduce(out, plan_of(notebooks, **{"01_beta:N": 5}))
    assert statuses(changed) == {"00_alpha": "cached", "01_beta": "ok"}
    table = pd.read_csv(out / "metrics.csv")
    assert float(table[(table.unit == "01_beta") & (table.metric == "ratio")].value.iloc[0]) == pytest.approx(0.2)

    (out / "units" / "00_alpha" / "00_alpha" / "00_alpha.html").unlink()       # an output gone: the unit re-runs
    assert statuses(reproduce(out, plan_of(notebooks, **{"01_beta:N": 5})))["00_alpha"] == "ok"

    page = (out / "index.html").read_text()
    links = Links()
    links.feed(page)
    assert len([t for t in links.targets if t.endswith(".png")]) == 2
    assert any(t.endswith("01_beta.html") for t in links.targets)
    for target in links.targets:
        assert not target.startswith(("/", "http")), target
        assert (out / target).is_file(), target
    assert "paper" in page and "not DINO" in page


def test_a_failing_unit_is_reported_with_its_cell_and_the_rest_run(notebooks, tmp_path):
    out = tmp_path / "out"
    plan = plan_of(notebooks, **{"00_alpha:N": 0})
    # 01_beta waits for 00_alpha here (a dependency), so it is skipped with the reason
    plan = dataclasses.replace(plan, units=[plan.units[0], dataclasses.replace(plan.units[1], deps=("00_alpha",))])
    summary = reproduce(out, plan)
    assert statuses(summary) == {"00_alpha": "failed", "01_beta": "skipped"}
    failures = json.loads((out / FAILURES).read_text())
    assert [f["unit"] for f in failures] == ["00_alpha", "01_beta"]
    assert "code cell 2" in failures[0]["cell"] and "ZeroDivisionError" in failures[0]["cell"]
    assert Path(failures[0]["executed_copy"]).is_file()
    assert "depends on 00_alpha" in failures[1]["reason"]

    # from the command line, without the dependency: the other unit finishes, the exit status is 1
    code = nbseg.cli.main(["reproduce", str(out), "--only", "0", "--notebooks-dir", str(notebooks),
                           "-p", "00_alpha:N=0", "--jobs", "2"])
    assert code == 1
    assert [f["unit"] for f in json.loads((out / FAILURES).read_text())] == ["00_alpha"]
    table = pd.read_csv(out / "metrics.csv")
    threads = table[(table.unit == "01_beta") & (table.metric == "threads")].value
    assert threads.astype(int).tolist() == [threads_per_job(2)]      # 2 jobs: the cores split between them


def test_a_killed_reproduction_resumes(tmp_path):
    folder = write_notebooks(tmp_path / "nb", **{"00_alpha": 2, "01_beta": 4})
    out = tmp_path / "out"
    args = [sys.executable, "-m", "nbseg", "reproduce", str(out), "--only", "0", "--notebooks-dir", str(folder)]
    proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_done = out / "units" / "00_alpha" / "unit.json"
    deadline = time.time() + 1200                     # minutes only on a machine shared by many jobs
    while not first_done.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)              # the batch and its unit processes, as a killed job
    proc.wait()
    assert first_done.is_file() and not (out / "index.html").exists()
    summary = reproduce(out, plan_of(folder))
    assert statuses(summary)["00_alpha"] == "cached" and statuses(summary)["01_beta"] in ("ok", "cached")
    assert not summary.failed and (out / "units" / "01_beta" / "01_beta" / "01_beta.html").is_file()


def test_out_dir_holding_a_users_files_is_refused(notebooks, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty and holds no reproduction"):
        reproduce(tmp_path, plan_of(notebooks))
    assert (tmp_path / "notes.txt").read_text() == "mine"


# ----------------------------------------------------------------------------------------------------------------
# a smoke reproduction of real notebooks (make test)


@pytest.mark.notebook
def test_smoke_reproduction_of_real_notebooks(tmp_path):
    from nbseg.world import WorldSpec, write_world

    # 32 train images: the claims smoke profile trains on batches of 16
    root = write_world(tmp_path / "world", WorldSpec(size=96, n_train=32, n_val=24), workers=1, progress=False)
    out = tmp_path / "repro"
    code = nbseg.cli.main(["reproduce", str(out), "--profile", "smoke", "--only", "01_attention_thresholds",
                           "04_class_angles", "claims", "-p", f"DATA_ROOT={root}"])
    assert code == 0
    table = pd.read_csv(out / "metrics.csv")
    assert set(table.unit) == {"01_attention_thresholds", "04_class_angles", "claims"}
    claims = pd.read_csv(out / "units" / "claims" / "claims" / "claims.csv")     # every method's rows, one seed
    assert {"alignseg", "dcn", "transfgu", "pgseg", "san"} <= set(claims.method)
    table = table[table.unit != "claims"]
    assert set(table.backbone) == {"embedded"} and set(table.dataset) == {f"world ({root})"}
    smoke = table[table.metric == "smoke"]
    assert len(smoke) == 2 and set(smoke.value.astype(str)) == {"True"}
    numbers = pd.to_numeric(table.value, errors="coerce").dropna()
    assert len(numbers) >= 6 and numbers.notna().all()
    assert not (out / "units" / "world").exists()          # a given DATA_ROOT: no world to write first
