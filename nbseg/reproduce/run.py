"""Executing a plan: each unit in its own process, in a work folder renamed into place only on success.

``OUT_DIR`` layout:

* ``reproduce.json`` - marks the folder as a reproduction (a non-empty folder without it is refused: nothing a
  user wrote there is touched) and records the last run: revision, machine, package versions, unit times.
* ``units/<name>/`` - a finished unit: what it wrote, and ``unit.json`` (its key, parameters, facts, seconds).
* ``.work/<name>-<key>/`` - a unit being run. A killed run leaves it; the next run with the same key resumes there
  (the notebooks' and ablations' training runs and the claims cache resume inside it). On success it is renamed to
  ``units/<name>`` (the previous result set aside first and dropped after), so ``units/`` only ever holds complete
  results.
* ``failures.json`` - every unit that failed (its reason and failing cell) or was skipped because a unit it depends
  on failed; ``metrics.csv`` - every metric of every finished unit (:mod:`nbseg.reproduce.report`).

``jobs`` units run at once, each with OMP / MKL / torch threads pinned to ``max(1, cores // jobs)`` so that N jobs
do not oversubscribe the cores.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nbseg.errors import ConfigError
from nbseg.io import atomic_write_json
from nbseg.reproduce.plan import Plan, Unit, torchrun_command

MARKER = "reproduce.json"
RESULT = "result.json"        # what a unit's process writes into its work folder (nbseg.reproduce.unit)
THREADS_ENV = "NBSEG_THREADS"  # the torch threads of a unit's process
UNIT_INFO = "unit.json"
FAILURES = "failures.json"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", THREADS_ENV)
POLL_S = 0.2


@dataclass
class Outcome:
    unit: str
    status: str            # ok (ran), cached (skipped: key and outputs present), failed, skipped (a dependency failed)
    seconds: float = 0.0
    reason: str = ""
    cell: str = ""
    executed_copy: str = ""


@dataclass
class Summary:
    outcomes: list[Outcome] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in ("failed", "skipped")]

    def text(self) -> str:
        lines = [f"{o.unit:32s} {o.status:8s} {o.seconds:7.1f} s" + (f"  {o.reason}" if o.reason else "")
                 for o in self.outcomes]
        counts = {s: sum(o.status == s for o in self.outcomes) for s in ("ok", "cached", "failed", "skipped")}
        lines.append(f"{counts['ok']} ran, {counts['cached']} up to date, {counts['failed']} failed, "
                     f"{counts['skipped']} skipped (a dependency failed) in {self.wall_s:.1f} s")
        return "\n".join(lines)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                           # not on Linux
        return os.cpu_count() or 1


def threads_per_job(jobs: int) -> int:
    return max(1, cores() // max(1, jobs))


def unit_dir(out: Path, unit: Unit) -> Path:
    return out / "units" / unit.name


def work_dir(out: Path, unit: Unit) -> Path:
    return out / ".work" / f"{unit.name}-{unit.key[:16]}"


def outputs_present(out: Path, unit: Unit) -> bool:
    """Whether a finished unit's results are all there (a key file alone is not enough: files may be deleted)."""
    folder = unit_dir(out, unit)
    if unit.kind == "notebook":
        stem = Path(unit.source).stem
        return all((folder / stem / f"{stem}{suffix}").is_file() for suffix in (".ipynb", ".html"))
    if unit.kind == "ablate":
        from nbseg.methods.base import get_method

        return (folder / get_method(unit.source).ablation_table).is_file()
    if unit.kind == "claims":
        return (folder / "claims.csv").is_file()
    from nbseg.world import default_spec, is_complete

    try:
        roots = json.loads((folder / "world.json").read_text())["roots"]
        wanted = {str(size) for size in unit.parameters["sizes"]}
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return set(roots) == wanted and all(is_complete(Path(root), default_spec(int(size)))
                                        for size, root in roots.items())


def up_to_date(out: Path, unit: Unit) -> bool:
    try:
        info = json.loads((unit_dir(out, unit) / UNIT_INFO).read_text())
    except (OSError, ValueError):
        return False
    return info.get("key") == unit.key and info.get("status") == "ok" and outputs_present(out, unit)


def prepare_out(out: Path) -> None:
    """Create or check OUT_DIR (see the module docstring) and finish any swap a killed run left half done."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; pass a folder as OUT_DIR")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ConfigError(f"{out} is not empty and holds no reproduction ({MARKER}); choose an empty or new "
                          "OUT_DIR (nothing there is overwritten)")
    (out / "units").mkdir(parents=True, exist_ok=True)
    for aside in (out / "units").glob(".*.previous"):
        target = aside.parent / aside.name[1:-len(".previous")]
        if target.exists():
            shutil.rmtree(aside)
        else:
            aside.rename(target)


def command(unit: Unit, task_file: Path, gpus: int) -> list[str]:
    """The process a unit runs in; a training unit under ``torchrun`` when ``gpus`` > 1."""
    args = ["nbseg.reproduce.unit", str(task_file)]
    return torchrun_command(sys.executable, gpus if unit.training else 0, args)


def _start(out: Path, unit: Unit, profile: str, jobs: int, gpus: int, timeout: float | None):
    work = work_dir(out, unit)
    for stale in (out / ".work").glob(f"{unit.name}-*"):    # an earlier key's half-run: its results are not ours
        if stale != work:
            shutil.rmtree(stale)
    work.mkdir(parents=True, exist_ok=True)
    (work / RESULT).unlink(missing_ok=True)
    task = {"kind": unit.kind, "name": unit.name, "source": unit.source, "parameters": unit.parameters,
            "profile": profile, "work": str(work), "timeout": timeout}
    task_file = atomic_write_json(out / ".work" / f"{unit.name}.task.json", task)
    n = str(threads_per_job(jobs))
    env = {**os.environ, **{var: n for var in THREAD_VARS}}
    log = open(work / "unit.log", "w")
    proc = subprocess.Popen(command(unit, task_file, gpus), env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, log, time.perf_counter()


def _finish(out: Path, unit: Unit, returncode: int, seconds: float) -> Outcome:
    work = work_dir(out, unit)
    try:
        result = json.loads((work / RESULT).read_text())
    except (OSError, ValueError):
        tail = (work / "unit.log").read_text(errors="replace").strip().splitlines()[-3:]
        result = {"status": "failed", "reason": f"the unit's process exited with {returncode} without a result: "
                                                f"{' | '.join(tail)} (log: {work / 'unit.log'})"}
    if result["status"] != "ok" or returncode != 0:
        reason = result.get("reason") or f"exit status {returncode}"
        return Outcome(unit.name, "failed", seconds, reason, result.get("cell", ""), result.get("executed_copy", ""))
    atomic_write_json(work / UNIT_INFO, {"key": unit.key, "status": "ok", "unit": unit.name, "kind": unit.kind,
                                         "parameters": unit.parameters, "facts": unit.facts,
                                         "seconds": round(seconds, 1), "finished": time.time()})
    target = unit_dir(out, unit)
    aside = target.parent / f".{unit.name}.previous"
    if target.exists():
        target.rename(aside)
    work.rename(target)                              # atomic on one file system: units/ holds whole results only
    if aside.exists():
        shutil.rmtree(aside)
    return Outcome(unit.name, "ok", seconds)


def run_plan(plan: Plan, out_dir: str | Path, *, jobs: int = 1, gpus: int = 0, timeout: float | None = None,
             echo=print) -> Summary:
    """Run every unit of ``plan`` not already up to date, ``jobs`` at a time; a unit whose dependency failed is
    skipped with the reason. Writes ``failures.json`` (empty list when none) and returns the summary."""
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    out = Path(out_dir).resolve()
    prepare_out(out)
    started = time.perf_counter()
    outcomes: dict[str, Outcome] = {}
    pending = list(plan.units)
    running: dict[str, tuple] = {}
    for unit in list(pending):
        if up_to_date(out, unit):
            outcomes[unit.name] = Outcome(unit.name, "cached")
            pending.remove(unit)
            echo(f"{unit.name}: up to date")
    try:
        _schedule(out, plan, pending, running, outcomes, jobs, gpus, timeout, echo)
    finally:                                         # Ctrl-C: no unit process outlives the batch
        for unit, proc, log, _ in running.values():
            proc.kill()
            proc.wait()
            log.close()
    summary = Summary([outcomes[u.name] for u in plan.units], time.perf_counter() - started)
    atomic_write_json(out / FAILURES, [asdict(o) for o in summary.failed])
    return summary


def _schedule(out: Path, plan: Plan, pending: list, running: dict, outcomes: dict, jobs: int, gpus: int,
              timeout, echo) -> None:
    """Start units whose dependencies are done while fewer than ``jobs`` run; collect those that end."""
    while pending or running:
        for unit in list(pending):
            failed_deps = [d for d in unit.deps if d in outcomes and outcomes[d].status in ("failed", "skipped")]
            if failed_deps:
                outcomes[unit.name] = Outcome(unit.name, "skipped", reason=f"depends on {', '.join(failed_deps)}, "
                                                                           "which failed")
                pending.remove(unit)
                echo(f"{unit.name}: skipped ({outcomes[unit.name].reason})")
            elif len(running) < jobs and all(outcomes.get(d) and outcomes[d].status in ("ok", "cached")
                                               for d in unit.deps):
                echo(f"{unit.name}: running ({unit.kind}, {threads_per_job(jobs)} threads)")
                running[unit.name] = (unit, *_start(out, unit, plan.profile, jobs, gpus, timeout))
                pending.remove(unit)
        for name, (unit, proc, log, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            outcome = _finish(out, unit, proc.returncode, time.perf_counter() - t0)
            outcomes[name] = outcome
            del running[name]
            echo(f"{name}: {outcome.status} in {outcome.seconds:.1f} s" +
                 (f": {outcome.reason}" if outcome.reason else ""))
        if running:
            time.sleep(POLL_S)


__all__ = ["run_plan", "Summary", "Outcome", "prepare_out", "up_to_date", "unit_dir", "work_dir", "command",
           "threads_per_job", "cores", "MARKER", "UNIT_INFO", "FAILURES", "RESULT", "THREADS_ENV"]
