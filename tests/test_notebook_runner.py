"""nbseg.notebook_runner: selection, parameter checks, batch execution with papermill, metric collection, CLI.

Executing a notebook starts a kernel (seconds), so only four tests execute (five notebooks in all); every check
that can be made before execution is made without a kernel.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

import nbseg.cli
from nbseg import notebook_runner as runner
from nbseg.errors import ConfigError, NbsegError

PARAMETERS = 'SMOKE = False\nOUT_DIR = "x"\nINTERACTIVE = False\nSEED = 0\nN = 3\nRATE = 0.5\nNAME = "a"\n'
WRITE_METRICS = (
    "import json, pathlib\n"
    "pathlib.Path(OUT_DIR).mkdir(parents=True, exist_ok=True)\n"
    "metrics = {'n_squared': N * N, 'nested': {'rate': RATE, 'smoke': SMOKE}, 'name': NAME}\n"
    "pathlib.Path(OUT_DIR, 'metrics.json').write_text(json.dumps(metrics))\n")
DRAW_FIGURE = "from nbseg import viz\nviz.curve_figure(None, {'n': [1, N]}, title='t', xlabel='x', ylabel='y')\n"
TIMEOUT_S = 120


def write_notebook(folder: Path, name: str, *code: str, tagged: bool = True) -> Path:
    """A notebook: a markdown title, the parameters cell (tagged unless told), then the given code cells."""
    parameters = new_code_cell(PARAMETERS)
    if tagged:
        parameters.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[new_markdown_cell(f"# {name}"), parameters, *(new_code_cell(c) for c in code)])
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def metric(metrics: pd.DataFrame, notebook: str, key: str):
    values = metrics.loc[(metrics.notebook == notebook) & (metrics.key == key), "value"].tolist()
    assert len(values) == 1, metrics
    return values[0]


# ----------------------------------------------------------------------------------------------------------------
# without a kernel


def test_find_notebooks_by_prefix_stem_or_file(tmp_path):
    for name in ["10_train", "00_quickstart", "01_probe", "11_eval"]:
        write_notebook(tmp_path, name)
    write_notebook(tmp_path, "scratch")  # not numbered: never selected
    stems = lambda paths: [p.stem for p in paths]  # noqa: E731
    assert stems(runner.find_notebooks(notebooks_dir=tmp_path)) == ["00_quickstart", "01_probe", "10_train",
                                                                     "11_eval"]
    assert stems(runner.find_notebooks(["00"], tmp_path)) == ["00_quickstart"]
    assert stems(runner.find_notebooks(["11_eval.ipynb", "00_quickstart"], tmp_path)) == ["00_quickstart",
                                                                                         "11_eval"]
    assert stems(runner.find_notebooks(["1"], tmp_path)) == ["10_train", "11_eval"]
    with pytest.raises(ConfigError, match="'7'.*available: 00_quickstart, 01_probe, 10_train, 11_eval"):
        runner.find_notebooks(["7"], tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        runner.find_notebooks(notebooks_dir=tmp_path / "missing")


def test_read_parameters(tmp_path):
    path = write_notebook(tmp_path, "00_a")
    assert runner.read_parameters(path) == {"SMOKE": False, "OUT_DIR": "x", "INTERACTIVE": False, "SEED": 0,
                                            "N": 3, "RATE": 0.5, "NAME": "a"}
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].source = "%matplotlib inline\nlower = 1\nSTEPS: int = 10\nCKPT = None\n"
    nbformat.write(nb, path)
    assert runner.read_parameters(path) == {"STEPS": 10, "CKPT": None}
    nb.cells[1].source = "from pathlib import Path\nROOT = Path('data')\n"
    nbformat.write(nb, path)
    with pytest.raises(ConfigError, match="ROOT = Path\\('data'\\) is not a literal"):
        runner.read_parameters(path)
    with pytest.raises(ConfigError, match="no code cell is tagged 'parameters'"):
        runner.read_parameters(write_notebook(tmp_path, "01_untagged", tagged=False))


def test_check_notebook_flags_what_must_not_be_committed(tmp_path):
    clean = write_notebook(tmp_path, "00_clean", "print(1)")
    assert runner.check_notebook(clean) == []

    nb = nbformat.read(clean, as_version=4)
    nb.cells[2].outputs = [new_output("stream", name="stdout", text="1\n")]
    nb.cells[2].execution_count = 1
    nb.metadata["papermill"] = {"parameters": {}}
    path = tmp_path / "01_executed.ipynb"
    nbformat.write(nb, path)
    problems = runner.check_notebook(path)
    assert len(problems) == 3
    assert "cells [2] carry stored outputs" in problems[0]
    assert "cells [2] carry execution counts" in problems[1]
    assert "metadata.papermill" in problems[2]

    untagged = runner.check_notebook(write_notebook(tmp_path, "02_untagged", tagged=False))
    assert len(untagged) == 1 and "tagged 'parameters'" in untagged[0]

    nb = nbformat.read(clean, as_version=4)
    nb.cells[1].source = "SMOKE = True\n"
    nb.cells.insert(1, new_code_cell("import os"))
    nbformat.write(nb, path)
    problems = runner.check_notebook(path)
    assert "not the first code cell" in problems[0]
    assert "does not define INTERACTIVE, SEED, OUT_DIR" in problems[1]


@pytest.mark.parametrize("text, expected", [
    ("N=5", ("N", 5)), ("RATE=0.1", ("RATE", 0.1)), ("SMOKE=True", ("SMOKE", True)), ("CKPT=None", ("CKPT", None)),
    ("NAME=abc", ("NAME", "abc")), ("NAME='5'", ("NAME", "5")), ("SIZES=[1, 2]", ("SIZES", [1, 2])),
    ("EXPR=a=b", ("EXPR", "a=b")),
])
def test_parse_override(text, expected):
    assert runner.parse_override(text) == expected


def test_bad_overrides_and_untagged_notebooks_fail_before_anything_runs(tmp_path):
    good = write_notebook(tmp_path, "00_good", WRITE_METRICS)
    out = tmp_path / "out"

    def run(overrides, paths=(good,)):
        with pytest.raises(ConfigError) as err:
            runner.run_notebooks(list(paths), overrides=overrides, out_dir=out)
        return str(err.value)

    message = run({"N": "five"})
    assert "parameter N expects int (default 3), got 'five' (str)" in message
    assert "parameter SMOKE expects bool (default False), got 3 (int)" in run({"SMOKE": 3})
    assert "parameter RATE expects float" in run({"RATE": True})
    assert "unknown parameter FOO; valid keys: SEED, N, RATE, NAME" in run({"FOO": 1})
    assert "OUT_DIR is set by the runner" in run({"OUT_DIR": "elsewhere"})
    untagged = write_notebook(tmp_path, "01_untagged", WRITE_METRICS, tagged=False)
    assert "01_untagged.ipynb: no code cell is tagged 'parameters'" in run({}, [good, untagged])
    with pytest.raises(ConfigError, match="unknown profile 'fast'"):
        runner.run_notebooks([good], profile="fast", out_dir=out)
    assert not out.exists()  # nothing ran


class _FakeSpec:
    def __init__(self, argv):
        self.argv = argv
        self.resource_dir = "/fake/kernels/python3"


def _fake_kernels(monkeypatch, specs):
    """KernelSpecManager answering ``specs`` in turn (None = no such kernel); returns the install calls."""
    import ipykernel.kernelspec
    import jupyter_client.kernelspec as kernelspec

    answers = iter(specs)
    installs = []

    class FakeManager:
        def get_kernel_spec(self, name):
            spec = next(answers)
            if spec is None:
                raise kernelspec.NoSuchKernel(name)
            return spec

    monkeypatch.setattr(kernelspec, "KernelSpecManager", FakeManager)
    monkeypatch.setattr(ipykernel.kernelspec, "install", lambda **kwargs: installs.append(kwargs))
    return installs


@pytest.mark.parametrize("argv0", ["python", "python3", sys.executable, str(Path(sys.executable).parent / "python")])
def test_kernel_of_this_interpreter_is_kept(monkeypatch, argv0):
    installs = _fake_kernels(monkeypatch, [_FakeSpec([argv0, "-m", "ipykernel_launcher"])])
    assert runner.ensure_python3_kernel() == Path("/fake/kernels/python3")
    assert installs == []


@pytest.mark.parametrize("found", [None, _FakeSpec(["/opt/other-env/bin/python", "-m", "ipykernel_launcher"])])
def test_kernel_is_installed_into_this_environment_when_missing_or_foreign(monkeypatch, found):
    installs = _fake_kernels(monkeypatch, [found, _FakeSpec([sys.executable])])
    runner.ensure_python3_kernel()
    assert installs == [{"prefix": sys.prefix, "kernel_name": "python3"}]


def test_kernel_still_shadowed_after_install_is_an_error(monkeypatch):
    foreign = _FakeSpec(["/opt/other-env/bin/python"])
    _fake_kernels(monkeypatch, [foreign, foreign])
    with pytest.raises(ConfigError, match="JUPYTER_PREFER_ENV_PATH"):
        runner.ensure_python3_kernel()


def test_repo_notebooks_are_committed_clean():
    """Every notebook in the repository: tagged parameters cell, no outputs, no papermill metadata."""
    notebooks = sorted((runner.repo_root() / "notebooks").glob("*.ipynb"))
    problems = {path.name: runner.check_notebook(path) for path in notebooks}
    assert {name: found for name, found in problems.items() if found} == {}


# ----------------------------------------------------------------------------------------------------------------
# executing notebooks


@pytest.mark.notebook
def test_batch_collects_metrics_and_reports_the_failing_cell(tmp_path):
    good = write_notebook(tmp_path, "00_good", WRITE_METRICS, DRAW_FIGURE)
    bad = write_notebook(tmp_path, "01_bad", "raise ValueError('boom')", WRITE_METRICS)
    out = tmp_path / "out"
    with pytest.raises(runner.NotebookFailure) as err:
        runner.run_notebooks([bad, good], profile="smoke", out_dir=out, timeout=TIMEOUT_S)
    assert isinstance(err.value, NbsegError)
    message = str(err.value)
    assert "1 of 2 notebooks failed" in message
    assert "01_bad: code cell 2 (cell index 2 of the source notebook; In [3] in the executed copy) raised " \
           "ValueError: boom" in message
    assert f"inspect {out.resolve() / '01_bad.failed' / '01_bad.ipynb'}" in message
    assert [f.notebook for f in err.value.failures] == ["01_bad"]

    # the good notebook still ran, with the profile's and the runner's parameters
    assert metric(err.value.metrics, "00_good", "n_squared") == 9
    assert metric(err.value.metrics, "00_good", "nested.smoke") is True
    assert set(err.value.metrics.notebook) == {"00_good"}
    table = pd.read_csv(out / "metrics.csv")
    assert list(table.columns) == ["notebook", "key", "value"]
    assert table.set_index("key").loc["name", "value"] == "a"
    executed = nbformat.read(out / "00_good" / "00_good.ipynb", as_version=4)
    assert executed.metadata.papermill.parameters == {"SMOKE": True, "INTERACTIVE": False,
                                                      "OUT_DIR": str(out.resolve() / "00_good")}
    figure_outputs = executed.cells[-1].outputs
    assert any("image/png" in output.get("data", {}) for output in figure_outputs)  # viz figures display


@pytest.mark.notebook
def test_override_changes_the_recorded_value(tmp_path, capsys):
    good = write_notebook(tmp_path, "00_good", WRITE_METRICS)
    metrics = runner.run_notebooks([good], profile="full", overrides={"N": 5, "RATE": 1}, out_dir=tmp_path / "out",
                                   timeout=TIMEOUT_S)
    assert metric(metrics, "00_good", "n_squared") == 25
    assert metric(metrics, "00_good", "nested.rate") == 1  # an int is accepted for a float default
    assert metric(metrics, "00_good", "nested.smoke") is False
    assert "[1/1] 00_good (full) ... ok in" in capsys.readouterr().out


@pytest.fixture
def cli(monkeypatch):
    """nbseg.cli.main with only this module's sub-commands (the other modules may not exist yet)."""
    monkeypatch.setattr(nbseg.cli, "COMMAND_MODULES", ["nbseg.notebook_runner"])
    return nbseg.cli.main


@pytest.mark.notebook
def test_cli_run_writes_the_metrics_table(tmp_path, cli, capsys):
    write_notebook(tmp_path, "00_good", WRITE_METRICS)
    write_notebook(tmp_path, "01_other", "raise RuntimeError('not selected')")
    out = tmp_path / "out"
    code = cli(["notebooks", "run", "00", "--notebooks-dir", str(tmp_path), "--out", str(out), "-p", "N=4",
                "--timeout", str(TIMEOUT_S)])
    assert code == 0
    table = pd.read_csv(out / "metrics.csv")
    assert table.set_index("key").loc["n_squared", "value"] == "16"  # one value column of mixed types: text
    assert not (out / "01_other").exists()
    printed = capsys.readouterr().out
    assert "[1/1] 00_good (smoke) ... ok in" in printed and "n_squared" in printed


@pytest.mark.notebook
def test_cli_exits_non_zero_when_a_notebook_fails(tmp_path, cli, capsys):
    write_notebook(tmp_path, "00_bad", "1 / 0")
    code = cli(["notebooks", "run", "--notebooks-dir", str(tmp_path), "--out", str(tmp_path / "out"),
                "--timeout", str(TIMEOUT_S)])
    assert code == 1
    error = capsys.readouterr().err
    assert "1 of 1 notebooks failed" in error and "00_bad: code cell 2" in error and "ZeroDivisionError" in error


def test_cli_errors_without_running(tmp_path, cli, capsys):
    write_notebook(tmp_path, "00_good", WRITE_METRICS)
    assert cli(["notebooks", "run", "7", "--notebooks-dir", str(tmp_path)]) == 2
    assert "no notebook matches '7' in" in capsys.readouterr().err
    assert cli(["notebooks", "run", "--notebooks-dir", str(tmp_path), "-p", "N=five"]) == 2
    assert "parameter N expects int" in capsys.readouterr().err
    assert cli(["notebooks", "list", "--notebooks-dir", str(tmp_path)]) == 0
    assert "00_good: SMOKE=False" in capsys.readouterr().out
    assert cli(["notebooks"]) == 2
