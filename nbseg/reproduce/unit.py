"""One unit of ``nbseg reproduce``, run in its own process: ``python -m nbseg.reproduce.unit TASK.json``.

The task names the unit's kind, its parameters and its work folder; the unit calls the command that owns the work
(:func:`nbseg.notebook_runner.run_notebooks`, :func:`nbseg.methods.workflow.run_ablations`,
:func:`nbseg.claims.runner.run_claims`, :func:`nbseg.world.ensure_world`) with the work folder as its output, and
writes ``RESULT`` there: ``{"status": "ok"}`` or ``{"status": "failed", "reason": ..., "cell": ...,
"executed_copy": ...}``. Its own process because: ``--jobs N`` runs units side by side with pinned threads, a
training unit may run under ``torchrun``, and a killed unit takes nothing else down.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

from nbseg.io import atomic_write_json, atomic_write_text
from nbseg.reproduce.run import RESULT, THREADS_ENV


def render_html(executed: Path) -> Path:
    """The executed notebook as a static HTML page beside it (nbconvert; figures embedded), for the report."""
    import nbconvert
    import nbformat

    body, _ = nbconvert.HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    return atomic_write_text(executed.with_suffix(".html"), body)


def _notebook(task: dict, work: Path) -> dict:
    from nbseg.notebook_runner import NotebookFailure, run_notebooks

    path = Path(task["source"])
    try:
        run_notebooks([path], task["profile"], task["parameters"], work, task.get("timeout"))
    except NotebookFailure as err:
        failure = err.failures[0]
        return {"status": "failed", "reason": failure.reason, "cell": failure.reason,
                "executed_copy": str(failure.executed_copy)}
    render_html(work / path.stem / path.name)
    return {"status": "ok"}


def _ablate(task: dict, work: Path) -> dict:
    from nbseg.methods.base import get_method
    from nbseg.methods.workflow import run_ablations

    values = dict(task["parameters"])
    config = values.pop("CONFIG", None)
    table = run_ablations(get_method(task["source"]), work, profile=task["profile"], config=config,
                          overrides={key.lower(): value for key, value in values.items()}, progress=False)
    bad = table[table["status"] != "ok"]
    if len(bad):
        reasons = "; ".join(f"{row.ablation}: {row.status}" for row in bad.itertuples())
        return {"status": "failed", "reason": f"{len(bad)} of {len(table)} ablations failed: {reasons}"}
    return {"status": "ok"}


def _claims(task: dict, work: Path) -> dict:
    from nbseg.claims.runner import run_claims
    from nbseg.reproduce.plan import CLAIMS_FOLDER, CLAIMS_KEYS, CLAIMS_SEEDS

    values = {CLAIMS_KEYS[key]: value for key, value in task["parameters"].items()}
    # a folder of its own: run_claims refuses a non-empty folder it did not make, and the work folder holds the
    # unit's log already
    _, stats = run_claims(work / CLAIMS_FOLDER, profile=task["profile"], seeds=CLAIMS_SEEDS[task["profile"]], progress=False,
                          **values)
    if stats["failed"]:
        return {"status": "failed", "reason": f"{stats['failed']} claim measurement(s) failed; see "
                                              f"{work / CLAIMS_FOLDER / 'claims.md'}"}
    return {"status": "ok"}


def _world(task: dict, work: Path) -> dict:
    """The renders of the default world the plan's units read (``parameters["sizes"]``: the training one, and the
    probe one when a probe notebook reads it), so that parallel units never write one at once."""
    from nbseg.world import default_root, default_spec, ensure_world

    roots = {str(size): str(ensure_world(default_root(size), default_spec(size), progress=False))
             for size in task["parameters"]["sizes"]}
    atomic_write_json(work / "world.json", {"roots": roots})
    return {"status": "ok"}


KINDS = {"notebook": _notebook, "ablate": _ablate, "claims": _claims, "world": _world}


def main(argv: list[str]) -> int:
    task = json.loads(Path(argv[0]).read_text())
    work = Path(task["work"])
    if os.environ.get(THREADS_ENV):
        import torch

        torch.set_num_threads(int(os.environ[THREADS_ENV]))
    if int(os.environ.get("RANK", "0")) != 0:        # under torchrun, rank 0 reports
        KINDS[task["kind"]](task, work)
        return 0
    try:
        result = KINDS[task["kind"]](task, work)
    except Exception as err:                         # recorded for failures.json; the batch goes on
        result = {"status": "failed", "reason": f"{type(err).__name__}: {err}",
                  "traceback": traceback.format_exc(limit=8)}
    atomic_write_json(work / RESULT, result)
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
