"""The method contract: what a segmentation method supplies, written once, and the one registry of methods.

A method is two things:

* a **model** (an ``nn.Module``, :class:`SegmentationModel`): a frozen ``backbone`` plus trainable parts, built as
  ``model_class(cfg, backbone=None, device="cpu")``, with ``training_step``, ``scores_from_features``, ``predict``,
  ``provenance`` and ``frozen_prefixes``. The shared loop (:func:`nbseg.train.fit`) trains it; its class name is
  the ``kind`` recorded in every checkpoint.
* a **spec** (:class:`MethodSpec`): its name, config class and shipped configs, model class, training dataset,
  evaluation (returning an :class:`Evaluation`: a table, ``metrics()`` and a printable ``report()``), figures, smoke
  settings, named ablations and the paper's reported numbers, as data.

Everything generic - resolving a config, training / resuming a run folder, rebuilding a model from a checkpoint,
running ablations, segmenting user images - is written once in :mod:`nbseg.methods.workflow` and
:mod:`nbseg.methods.segment` and reaches a method only through its spec: ``nbseg train|evaluate|segment|ablate``,
the benchmarks and the notebooks resolve a method by name (or a checkpoint by its kind) with :func:`get_method` /
:func:`method_for_kind`. Adding a method = writing its folder and calling :func:`register` once (ARCHITECTURE.md).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import torch

from nbseg.backbones import load as load_backbone
from nbseg.errors import ConfigError

# The methods shipped with nbseg: name -> the module whose import registers its spec.
BUILTIN_METHODS = {"alignseg": "nbseg.methods.alignseg", "dcn": "nbseg.methods.dcn", "pgseg": "nbseg.methods.pgseg",
                   "san": "nbseg.methods.san", "transfgu": "nbseg.methods.transfgu"}


@runtime_checkable
class SegmentationModel(Protocol):
    """What the shared loop, evaluation and ``nbseg segment`` need from a model (an ``nn.Module``)."""

    cfg: Any                                  # the method's config (a dataclass subclassing TrainConfig)
    backbone: Any                             # the frozen :class:`nbseg.backbones.Backbone`
    frozen_prefixes: tuple[str, ...]          # state-dict prefixes left out of checkpoints ("backbone.",)

    def training_step(self, batch: dict, step: int = 0) -> dict[str, torch.Tensor]:
        """One step on a batch of the spec's training dataset -> ``{"loss": scalar with grad, other terms}``."""

    def scores_from_features(self, patches: torch.Tensor) -> torch.Tensor:
        """Frozen patch tokens (B, h, w, D) -> per-cluster scores (B, K, h, w); argmax gives the segmentation."""

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> cluster ids (B, H, W) int64 in [0, K), at the images' size."""

    def provenance(self) -> dict:
        """Method, backbone name, weights path and sha256 (:func:`nbseg.runs.backbone_facts`)."""


@runtime_checkable
class Evaluation(Protocol):
    """What a spec's ``evaluate`` returns."""

    table: Any                                # a pandas DataFrame, one row per (method, protocol / setting)

    def metrics(self) -> dict:
        """Flat ``metrics.json`` entries: what produced them (backbone, weights, dataset) and the scores."""

    def report(self) -> str:
        """The tables as text for the terminal, with the backbone and dataset they came from."""


@dataclass(frozen=True)
class Ablation:
    """One named change of a method's settings (config ``overrides``; ``smoke_overrides`` replace them in the smoke
    profile where the change does not fit a tiny run; ``epoch_scale`` multiplies the epochs after the config is
    resolved) and the paper's number for the same change, when the paper reports one (``paper_value``; and
    ``paper_baseline``, the paper's row it differs from, so tables can compare deltas when the settings differ)."""

    overrides: Mapping[str, Any] = field(default_factory=dict)
    paper_row: str = ""
    paper_value: float | None = None
    epoch_scale: int = 1
    smoke_overrides: Mapping[str, Any] = field(default_factory=dict)
    paper_baseline: float | None = None     # the paper's number this change is measured from (its delta's origin)

    def parameters(self) -> dict:
        """What the ablation changes, for tables: ``{"overrides": ..., "epoch_scale": ...}`` (non-defaults only)."""
        out = {"overrides": dict(self.overrides)} if self.overrides else {}
        if self.epoch_scale != 1:
            out["epoch_scale"] = self.epoch_scale
        return out


@dataclass(frozen=True)
class PaperNumbers:
    """The paper's reported numbers, as data: ``source`` (paper, table), ``setting`` (backbone, dataset) and
    ``values`` (``{"table/row": value in %}``). Every table that shows them labels them as the paper's."""

    source: str
    setting: str
    values: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    """Everything generic code needs to know about one method.

    Fields:
        name: command-line name (``nbseg train NAME``).
        title: the method and its paper, for tables and help.
        config_class: the config dataclass (subclass of :class:`nbseg.train.TrainConfig`).
        model_class: the model (:class:`SegmentationModel`); its class name is the checkpoint ``kind``.
        configs: shipped configs, ``{"world": path, "voc": path, ...}``; ``"world"`` is the default.
        training_dataset: ``(cfg, model, progress) -> Dataset`` of ``dataset[(index, seed)]`` items.
        evaluate: ``(model, *, split, limit, kmeans, progress) -> Evaluation`` on a labelled split.
        collate_fn: the training batches' collate function (None: the default).
        inference_size: ``cfg -> short side in px`` images are resized to before ``predict`` (None: as they are).
        figures: ``(evaluation, out_dir) -> [paths]``: the figures an evaluation alone can draw, as PNGs
            (``nbseg evaluate --figures DIR``; optional).
        smoke: config overrides of the smoke profile (tiny runs: tests, CI, ``--profile smoke``).
        smoke_eval_limit: images scored in the smoke profile.
        ablations: named :class:`Ablation` s (``nbseg ablate NAME``); ``smoke_ablations`` the ones the smoke profile
            runs.
        ablation_columns: ``{metrics.json key: column}`` of the ablation table (columns ending in ``%`` are scaled
            by 100).
        ablation_run_folder / ablation_table: each ablation runs in ``OUT/<ablation>/<ablation_run_folder>``; the
            table is written to ``OUT/<ablation_table>``.
        ablation_delta_column: a column of the ablation table whose difference to the ``"baseline"`` ablation is
            shown beside the paper's difference (``paper_value - paper_baseline``), for settings that differ from
            the paper's (optional).
        paper: the paper's reported numbers (:class:`PaperNumbers`); ``paper_column``: the ablation table's column
            of the paper's number for the same change (names the paper's setting).
        epoch_evaluator: ``(cfg, backbone, limit, progress) -> (model -> {name: value})`` scored at every epoch end
            by ``nbseg train --epoch-eval`` (optional).
        claims: ``() -> [nbseg.claims.Claim]``: the paper's central claims as rows of ``nbseg claims`` (optional;
            each a claim, the paper's evidence and ``measure(ctx, seed) -> Measurement``; see
            :mod:`nbseg.claims.base`).
    """

    name: str
    title: str
    config_class: type
    model_class: type
    configs: Mapping[str, Path]
    training_dataset: Callable[..., Any]
    evaluate: Callable[..., Evaluation]
    collate_fn: Callable | None = None
    inference_size: Callable[[Any], int | None] = lambda cfg: None
    figures: Callable[..., list] | None = None
    smoke: Mapping[str, Any] = field(default_factory=dict)
    smoke_eval_limit: int | None = None
    ablations: Mapping[str, Ablation] = field(default_factory=dict)
    smoke_ablations: tuple[str, ...] = ()
    ablation_columns: Mapping[str, str] = field(default_factory=dict)
    ablation_run_folder: str = "run"
    ablation_table: str = "ablations.csv"
    ablation_delta_column: str | None = None
    paper: PaperNumbers | None = None
    paper_column: str = "paper (as reported)"
    epoch_evaluator: Callable[..., Callable] | None = None
    claims: Callable[[], Any] | None = None

    @property
    def kind(self) -> str:
        """The ``kind`` the shared loop records in this method's checkpoints (the model's class name)."""
        return self.model_class.__name__

    def config_file(self, config: str | Path | None = None) -> Path:
        """None -> the shipped ``"world"`` config, a shipped name -> its file, else the YAML path (must exist)."""
        name = "world" if config is None else str(config)
        path = self.configs.get(name, Path(name))
        if not Path(path).is_file():
            raise ConfigError(f"{self.title} config {path} does not exist: pass a YAML file or one of the shipped "
                              f"names {sorted(self.configs)}")
        return Path(path)


def frozen_backbone(cfg, backbone=None, device: str | torch.device = "cpu"):
    """The frozen backbone a model runs on: ``backbone`` when given, else ``cfg.backbone`` with ``cfg.weights`` /
    ``cfg.random_init`` (:func:`nbseg.backbones.load`); moved to ``device``."""
    if backbone is None:
        backbone = load_backbone(cfg.backbone, cfg.weights, random_init=cfg.random_init, device=device)
    return backbone.to(device)


_REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the registry (a second spec under the same name or kind is an error) and return it."""
    old = _REGISTRY.get(spec.name)
    if old is not None and old is not spec:
        raise ConfigError(f"a method named {spec.name!r} is already registered ({old.title})")
    clash = [s.name for s in _REGISTRY.values() if s.kind == spec.kind and s.name != spec.name]
    if clash:
        raise ConfigError(f"model class {spec.kind} is already registered as method {clash[0]!r}")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a method (tests that register a toy method clean up with this)."""
    _REGISTRY.pop(name, None)


def _load_builtins() -> None:
    for module in BUILTIN_METHODS.values():
        importlib.import_module(module)


def method_names() -> list[str]:
    """The registered methods' names, built-in ones included, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def get_method(name: str) -> MethodSpec:
    """The spec registered as ``name``; an unknown name is an error listing the registered ones."""
    _load_builtins()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method {name!r}; registered methods: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def method_for_kind(kind: str, source: str | Path = "checkpoint") -> MethodSpec:
    """The spec whose model class is ``kind`` (a checkpoint's recorded kind); unknown kinds are an error."""
    _load_builtins()
    for spec in _REGISTRY.values():
        if spec.kind == kind:
            return spec
    known = ", ".join(f"{s.kind} ({s.name})" for s in _REGISTRY.values())
    raise ConfigError(f"{source} holds a model of kind {kind!r}, which no registered method builds; known: {known}")


__all__ = ["frozen_backbone", "SegmentationModel", "Evaluation", "Ablation", "PaperNumbers", "MethodSpec", "register",
           "unregister",
           "get_method", "method_names", "method_for_kind", "BUILTIN_METHODS"]
