"""The plan of ``nbseg reproduce``: which units run, with which checked parameters, under which key.

A **unit** is one thing the existing commands already do: a numbered notebook (``nbseg notebooks run``), one
method's ablation batch (``nbseg ablate``), the claims table (``nbseg claims``), or writing the default world
(``nbseg world``; every unit that reads that world depends on it, so parallel jobs never write it at once).

A unit's **key** is the sha256 of (unit name, its parameters, the code revision, the backbone weights' sha256, the
dataset's identity): when the key recorded in ``OUT/units/<name>/unit.json`` equals the planned one and the unit's
outputs are present, the unit is skipped. Why each part: parameters and code change the numbers; the weights and
the dataset change them too but do not appear in the parameters when they are defaults (the shipped embedded file,
the generated world).

Parameters (``-p KEY=VALUE``, a preset's values first) are UPPER_CASE like the notebooks' parameters cells. A key
applies to every selected unit that has it (a notebook whose parameters cell defines it; an ablation batch whose
method config has the lower-cased field; the claims table for BACKBONE / WEIGHTS / DATA_ROOT); ``UNIT:KEY=VALUE``
applies to one unit only. A key no selected unit takes, or a value of the wrong type, is an error naming the key.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import nbseg
from nbseg.errors import ConfigError
from nbseg.io import sha256_file
from nbseg.notebook_runner.notebooks import (_fits, _override_problems, _type_name, find_notebooks,
                                             read_parameters, repo_root)
from nbseg.runs import git_revision

PROFILES = ("smoke", "full")
CLAIMS_KEYS = {"BACKBONE": "backbone", "WEIGHTS": "weights", "DATA_ROOT": "data_root"}   # -p key -> run_claims arg
CLAIMS_SEEDS = {"smoke": 1, "full": 3}      # full: the claims command's own default
CLAIMS_FOLDER = "claims"                     # the claims unit's table lives in <unit folder>/claims/
WORLD = "world"


@dataclass(frozen=True)
class Unit:
    """One step of a reproduction. ``parameters`` are what the unit is given (already checked)."""
    name: str                    # "01_attention_thresholds", "ablate-alignseg", "claims", "world"
    kind: str                    # notebook | ablate | claims | world
    parameters: dict[str, Any]
    deps: tuple[str, ...] = ()
    source: str = ""             # the notebook's path, or the method's name
    training: bool = False       # trains a model: runs under torchrun with --gpus
    facts: dict[str, Any] = field(default_factory=dict)   # backbone, weights, dataset (for the report)
    key: str = ""


@dataclass(frozen=True)
class Plan:
    units: list[Unit]
    profile: str
    revision: str
    preset: str | None = None

    def unit(self, name: str) -> Unit:
        return next(u for u in self.units if u.name == name)


# ----------------------------------------------------------------------------------------------------------------
# presets: one per paper setting shipped in nbseg/configs (<method>_<setting>.yaml, the world excepted)


def presets() -> dict[str, dict[str, Any]]:
    """``{"alignseg-voc": {"method": "alignseg", "parameters": {...}}, ...}`` from the shipped configs."""
    from nbseg.methods.base import get_method, method_names

    found = {}
    for method in method_names():
        for setting, path in sorted(get_method(method).configs.items()):
            if setting == WORLD:
                continue
            values = yaml.safe_load(Path(path).read_text()) or {}
            found[f"{method}-{setting}"] = {"method": method, "config": str(path), "parameters": {
                "CONFIG": setting, "BACKBONE": values.get("backbone", "embedded"), "WEIGHTS": values.get("weights"),
                "DATASET": values.get("data", setting), "DATA_ROOT": values.get("data_root")}}
    return found


def preset_parameters(name: str) -> tuple[str, dict[str, Any]]:
    """(method, parameters) of preset ``name``; an unknown name lists the known ones."""
    known = presets()
    if name not in known:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(sorted(known))}")
    return known[name]["method"], dict(known[name]["parameters"])


# ----------------------------------------------------------------------------------------------------------------
# identity of code, weights and data


@functools.lru_cache(maxsize=1)
def code_revision() -> str:
    """Once per process (the code this process plans with): the git revision of the checkout (``-dirty`` plus a hash of the uncommitted diff when there is one, so an
    edit re-runs what it may change), or the package version and a hash of the ``nbseg/`` sources outside git."""
    rev = git_revision(repo_root())
    if rev == "unknown":
        h = hashlib.sha256()
        for path in sorted(Path(nbseg.__file__).parent.rglob("*.py")):
            h.update(str(path.relative_to(Path(nbseg.__file__).parent)).encode())
            h.update(path.read_bytes())
        return f"nbseg {nbseg.__version__} sources {h.hexdigest()[:16]}"
    if rev.endswith("-dirty"):
        import subprocess

        diff = subprocess.run(["git", "diff", "HEAD", "--", "nbseg", "notebooks"], cwd=repo_root(),
                              capture_output=True, timeout=30).stdout
        rev += "-" + hashlib.sha256(diff).hexdigest()[:16]
    return rev


def weights_identity(backbone: str, weights: str | None) -> str:
    """sha256 of the weights file a unit loads: WEIGHTS when given, the shipped file of an embedded backbone, else
    ``hub:<name>`` (the hub's file is identified by its name; it is hashed when loaded, in each run's provenance)."""
    from nbseg.backbones import EMBEDDED

    if weights:
        path = Path(weights)
        if not path.is_file():
            raise ConfigError(f"WEIGHTS={weights!r} is not a file; pass -p WEIGHTS=PATH of an existing weights file")
        return sha256_file(path)
    if backbone in EMBEDDED:
        path = EMBEDDED[backbone][1]()
        return sha256_file(path) if path.is_file() else f"missing:{path}"
    return f"hub:{backbone}"


def dataset_identity(dataset: str, data_root: str | None) -> str:
    """The default world (both renders): their roots and generator specs (``nbseg world`` guarantees the files match it). A given
    root: its path and the sha256 of its split lists / world marker (which change when the data does)."""
    from nbseg.world import PROBE_SIZE, default_root, default_spec

    if data_root is None:
        if dataset not in (WORLD, None):
            raise ConfigError(f"DATASET={dataset!r} needs its folder: pass -p DATA_ROOT=PATH")
        return " and ".join(f"world at {default_root(size)} "
                            f"{json.dumps(dataclasses.asdict(default_spec(size)), sort_keys=True)}"
                            for size in (None, PROBE_SIZE))
    root = Path(data_root)
    if not root.is_dir():
        raise ConfigError(f"DATA_ROOT={data_root!r} is not a folder; pass -p DATA_ROOT=PATH of the dataset root")
    h = hashlib.sha256()
    for path in sorted([*root.glob("world.json"), *root.rglob("ImageSets/**/*.txt"), *root.glob("*.txt")])[:200]:
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return f"{dataset} at {root.resolve()} {h.hexdigest()[:16]}"


def unit_key(name: str, parameters: dict, revision: str, weights_sha: str, dataset: str, extra: str = "") -> str:
    blob = json.dumps({"unit": name, "parameters": parameters, "code": revision, "weights": weights_sha,
                       "dataset": dataset, "extra": extra}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# parameters


def split_scoped(parameters: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``{"N": 1, "04_x:BINS": 3}`` -> (global ``{"N": 1}``, per unit ``{"04_x": {"BINS": 3}}``)."""
    common, scoped = {}, {}
    for key, value in parameters.items():
        unit, sep, name = key.rpartition(":")
        if sep:
            scoped.setdefault(unit, {})[name] = value
        else:
            common[key] = value
    return common, scoped


def _config_fields(method: str) -> dict[str, Any]:
    from nbseg.methods.base import get_method

    return {f.name: (None if f.default is dataclasses.MISSING else f.default)
            for f in dataclasses.fields(get_method(method).config_class)}


def _ablation_parameters(method: str, given: dict[str, Any], strict: bool) -> tuple[dict, list[str]]:
    """Config overrides of a method's ablation batch from UPPER_CASE keys (CONFIG picks the shipped config)."""
    fields, taken, problems = _config_fields(method), {}, []
    for key, value in given.items():
        if key == "CONFIG":
            taken[key] = value
        elif key.lower() in fields:
            if not _fits(value, fields[key.lower()]):
                default = fields[key.lower()]
                problems.append(f"ablate-{method}: parameter {key} expects {_type_name(default)} (config default "
                                f"{default!r}), got {value!r} ({_type_name(value)})")
            taken[key] = value
        elif strict:
            problems.append(f"ablate-{method}: unknown parameter {key}; config keys (upper-cased): "
                            f"{', '.join(k.upper() for k in fields)}")
    return taken, problems


# ----------------------------------------------------------------------------------------------------------------
# the plan


def _select(candidates: list[str], only: list[str] | None) -> list[str]:
    """Units named by ``only`` (exact name, or a prefix: ``0`` = the probe notebooks, ``ablate`` = every batch)."""
    if not only:
        return candidates
    chosen = []
    for name in only:
        matches = [c for c in candidates if c == name] or [c for c in candidates if c.startswith(name)]
        if not matches:
            raise ConfigError(f"--only {name!r} names no unit; units: {', '.join(candidates)}")
        chosen += [m for m in matches if m not in chosen]
    return [c for c in candidates if c in chosen]


def build_plan(profile: str = "smoke", only: list[str] | None = None, parameters: dict[str, Any] | None = None,
               preset: str | None = None, notebooks_dir: str | Path | None = None,
               methods: list[str] | None = None) -> Plan:
    """Every unit of a reproduction, checked before anything runs (one ConfigError lists every problem)."""
    from nbseg.methods.base import get_method, method_names

    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    given = dict(parameters or {})
    method_filter = list(methods) if methods else method_names()
    notebooks = find_notebooks(None, notebooks_dir)
    if preset is not None:
        method, values = preset_parameters(preset)
        given = {**values, **given}                   # -p overrides the preset
        if given.get("DATA_ROOT") is None:
            raise ConfigError(f"preset {preset} runs on real data: pass -p DATA_ROOT=PATH (the {values['DATASET']} "
                              "dataset root)")
        # the probe notebooks, the method's notebook (the one whose CONFIG names the method's configs) and ablations
        method_filter = [method]
        notebooks = [p for p in notebooks if p.stem[0] == "0" or p.stem.split("_", 1)[-1] == method]
    common, scoped = split_scoped(given)
    names = [p.stem for p in notebooks] + [f"ablate-{m}" for m in method_filter]
    if preset is None:
        names.append("claims")
    selected = _select(names, only)
    unknown_scopes = sorted(set(scoped) - set(selected))
    problems = [f"-p {u}:...: no selected unit is named {u!r} (selected: {', '.join(selected)})"
                for u in unknown_scopes]

    dataset, data_root = common.get("DATASET", WORLD), common.get("DATA_ROOT")
    backbone, weights = common.get("BACKBONE", "embedded"), common.get("WEIGHTS")
    try:
        data_id = dataset_identity(dataset, data_root)
        weights_sha = weights_identity(backbone, weights)
    except ConfigError as err:
        raise ConfigError(f"nothing was run: {err}") from err
    revision = code_revision()
    facts = {"backbone": backbone, "weights": weights or ("the shipped file" if backbone == "embedded" else "the hub's"),
             "weights sha256": weights_sha, "dataset": dataset if data_root is None else f"{dataset} ({data_root})"}
    used: set[str] = set()
    units: list[Unit] = []
    needs_world = data_root is None
    deps = (WORLD,) if needs_world else ()
    from nbseg.world import PROBE_SIZE, TRAIN_SIZE

    renders = {TRAIN_SIZE}                      # the default world's renders the units read (the world unit writes them)
    paths = {p.stem: p for p in notebooks}
    for name in selected:
        mine = scoped.get(name, {})
        if name in paths:
            try:
                defaults = read_parameters(paths[name])
            except ConfigError as err:
                problems.append(str(err))
                continue
            values = {k: v for k, v in common.items() if k in defaults}
            used |= set(values)
            values.update(mine)
            problems += _override_problems(name, defaults, values)
            code = hashlib.sha256(paths[name].read_bytes()).hexdigest()   # the notebook is the unit's code
            reads_data = "DATA_ROOT" in defaults         # a notebook without a dataset needs no world
            if reads_data and "WORLD_SIZE" in defaults:  # probe notebooks: None is the probe render
                renders.add(values.get("WORLD_SIZE", defaults["WORLD_SIZE"]) or PROBE_SIZE)
            units.append(Unit(name, "notebook", values, deps if reads_data else (), str(paths[name]),
                              facts={**facts, "protocol": "as the notebook records", "variant":
                                     values.get("VARIANT", defaults.get("VARIANT", "default"))},
                              key=unit_key(name, values, revision, weights_sha, data_id, profile + code)))
        elif name.startswith("ablate-"):
            method = name[len("ablate-"):]
            values, bad = _ablation_parameters(method, common, strict=False)
            used |= set(values)
            mine_values, mine_bad = _ablation_parameters(method, mine, strict=True)
            values.update(mine_values)
            problems += bad + mine_bad
            spec = get_method(method)
            units.append(Unit(name, "ablate", values, deps, method, training=True,
                              facts={**facts, "protocol": spec.paper.setting if spec.paper else "",
                                     "variant": "ablations (" + ", ".join(spec.ablations) + ")"},
                              key=unit_key(name, values, revision, weights_sha, data_id, profile)))
        else:                                          # the claims table
            values = {k: v for k, v in common.items() if k in CLAIMS_KEYS}
            used |= set(values)
            extra = sorted(set(mine) - set(CLAIMS_KEYS))
            if extra:
                problems.append(f"claims: unknown parameter(s) {extra}; it takes {', '.join(CLAIMS_KEYS)}")
            values.update(mine)
            units.append(Unit(name, "claims", values, deps, "claims", facts={
                **facts, "protocol": "each claim's own (see the claims table)", "variant": "claims"},
                key=unit_key(name, values, revision, weights_sha, data_id, profile)))
    unused = sorted(set(common) - used - {"DATASET"})
    if unused:
        problems.append(f"parameter(s) {', '.join(unused)} are taken by no selected unit "
                        f"({', '.join(selected)}); check the spelling, or scope one with -p UNIT:KEY=VALUE")
    if problems:
        raise ConfigError("nothing was run:\n  " + "\n  ".join(dict.fromkeys(problems)))
    if any(WORLD in u.deps for u in units):
        world = {"sizes": sorted(renders)}
        units.insert(0, Unit(WORLD, "world", world, (), "", facts={**facts, "protocol": "", "variant": ""},
                             key=unit_key(WORLD, world, revision, "", data_id)))
    return Plan(units, profile, revision, preset)


def torchrun_command(python: str, gpus: int, module_args: list[str]) -> list[str]:
    """The command a training unit runs under ``--gpus N``: ``torchrun --nproc_per_node N`` starting the same
    module (``nbseg.train.fit`` joins the process group torchrun sets up); without GPUs, plain ``python -m``."""
    if gpus and gpus > 1:
        return [str(Path(python).parent / "torchrun"), "--standalone", f"--nproc_per_node={gpus}", "-m",
                *module_args]
    return [python, "-m", *module_args]


__all__ = ["Unit", "Plan", "PROFILES", "build_plan", "presets", "preset_parameters", "code_revision",
           "weights_identity", "dataset_identity", "unit_key", "split_scoped", "torchrun_command"]
