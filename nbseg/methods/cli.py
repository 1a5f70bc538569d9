"""Method commands, every one resolved through the method registry (:mod:`nbseg.methods.base`):

* ``nbseg train METHOD RUN_DIR [key=value ...] [--config YAML]`` - train in RUN_DIR; running the same command again
  resumes it exactly (a finished run is only evaluated again); then the method's evaluation on the config's
  evaluation split: ``RUN_DIR/metrics.json`` and ``RUN_DIR/evaluation.csv``.
* ``nbseg evaluate RUN_DIR_or_CKPT`` - the checkpoint's recorded kind picks the method; the model is rebuilt from the
  checkpoint (config and backbone) and scored.
* ``nbseg segment --checkpoint CKPT IMAGE_OR_DIR... --out DIR`` - label PNGs and overlays for your own images.
* ``nbseg ablate METHOD OUT_DIR`` - the method's named ablations (AlignSeg: Table II; DCN: k, stages, foreground
  rule; TransFGU: Table 5's losses, variant), one run folder each, collected into one table beside the paper's numbers.

The work is done by :mod:`nbseg.methods.workflow` and :mod:`nbseg.methods.segment`, which the notebooks use too.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from nbseg.config import parse_overrides
from nbseg.errors import ConfigError
from nbseg.io import atomic_write_json, check_outputs
from nbseg.methods.base import get_method, method_names
from nbseg.methods.segment import check_segment_outputs, segment_images
from nbseg.methods.workflow import load_method_config, load_trained, run_ablations, run_method
from nbseg.notebook_runner import parse_override
from nbseg.train.run_folder import run_progress

TRAIN_EPILOG = """\
examples:
  nbseg train alignseg runs/alignseg_world                          # the world, embedded backbone, official variant
  nbseg train alignseg runs/alignseg_paper variant=paper epochs=5
  nbseg train alignseg runs/alignseg_world max_steps=100            # stop early; rerun without it to resume
  nbseg train alignseg runs/voc --config voc data_root=/data/VOC2012 weights=/w/dino_deitsmall16_pretrain.pth

  nbseg train dcn runs/dcn_world                                    # DCN on cached features of the world
  nbseg train dcn runs/dcn_voc --config voc data_root=/data/VOC2012 weights=/w/dino_deitsmall8_pretrain.pth

  nbseg train transfgu runs/transfgu_world --epoch-eval              # crop bank, concepts, pseudo labels, rounds
  nbseg train transfgu runs/transfgu_voc --config voc data_root=/data/VOC2012 weights=/w/dino_deitsmall8_pretrain.pth
  nbseg train san runs/san_world                                    # SAN from scratch (no pretrained model)
  nbseg train san runs/san_p3 --config potsdam3 data_root=/data/potsdam token_matcher=sigmoid

--config: a YAML file, or a shipped name (default world: the embedded backbone on the world; the others hold the
paper's settings: pass data_root=PATH and weights=PATH).
{methods}
"""


def _methods_help() -> str:
    lines = []
    for name in method_names():
        spec = get_method(name)
        keys = ", ".join(f.name for f in dataclasses.fields(spec.config_class))
        lines.append(f"{name}: {spec.title}; shipped configs {', '.join(sorted(spec.configs))}.\n"
                     f"  config keys: {keys}")
    return "\n".join(lines)


def _command(subparsers, name: str, func, summary: str, description: str, **kw):
    """A sub-command whose ``--debug`` shows tracebacks and whose ``func`` runs it."""
    parser = subparsers.add_parser(name, help=summary, description=description, **kw)
    parser.set_defaults(func=func)
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return parser


def register_cli(subparsers) -> None:
    names = "|".join(method_names())
    p = _command(subparsers, "train", _cli_train, "train a segmentation method (resumable: rerunning resumes)",
                 "Train a method in RUN_DIR (created; an existing run folder is resumed exactly, a finished one is "
                 "only evaluated). Writes config.yaml, provenance.json, checkpoint.pt (atomic), log.csv, "
                 "loss_curve.png and, after the method's evaluation on its evaluation split, metrics.json and "
                 "evaluation.csv.", formatter_class=argparse.RawDescriptionHelpFormatter,
                 epilog=TRAIN_EPILOG.format(methods=_methods_help()))
    p.add_argument("method", metavar=names, help="the method to train (a registered name)")
    p.add_argument("run_dir", help="run folder")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (unknown keys are errors)")
    p.add_argument("--config", default=None, help="experiment YAML or a shipped name (default world)")
    p.add_argument("--no-eval", action="store_true", help="train only; metrics.json then holds no scores")
    p.add_argument("--eval-limit", type=int, default=None, metavar="N", help="score the first N images only")
    p.add_argument("--epoch-eval", action="store_true",
                   help="also score the model at every epoch end (RUN_DIR/metrics.csv; AlignSeg, TransFGU)")
    p.add_argument("--no-kmeans", action="store_true", help="skip the k-means baselines (AlignSeg)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    e = _command(subparsers, "evaluate", _cli_evaluate,
                 "score a trained model (run folder or checkpoint) with its method's evaluation",
                 "Rebuild a trained model from RUN_DIR/checkpoint.pt (the method from its recorded kind, its stored "
                 "config and backbone) and score it on a labelled split. AlignSeg: both protocols (dataset-level "
                 "Hungarian and the per-image many-to-one precision protocol at 100x100) beside per-image and "
                 "dataset-level k-means on the same frozen features; DCN: the paper's Tables 1-2 and region counts.")
    e.add_argument("checkpoint", help="run folder or checkpoint.pt")
    e.add_argument("--data-root", default=None, help="dataset root, if not the one in the checkpoint's config")
    e.add_argument("--split", default=None, help="split to score (default: the config's evaluation split)")
    e.add_argument("--limit", type=int, default=None, metavar="N", help="score the first N images only")
    e.add_argument("--no-kmeans", action="store_true", help="skip the k-means baselines (AlignSeg)")
    e.add_argument("--json", default=None, metavar="FILE", help="also write the flat metrics as JSON (atomic)")
    e.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists (default: refuse)")
    e.add_argument("--figures", default=None, metavar="DIR", help="also draw the method's figures into DIR")
    _model_options(e)

    s = _command(subparsers, "segment", _cli_segment,
                 "segment your own images with a trained model: label PNGs and overlays",
                 "Write NAME.png (cluster ids as a palette PNG at the image's size) and NAME_overlay.png for every "
                 "image (files, or the images in folders). Writes are atomic; an unreadable image is skipped and "
                 "reported (exit status 1), the others are still written. --out may not be a folder holding the "
                 "inputs, and existing outputs are kept unless --overwrite is given.")
    s.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders of images")
    s.add_argument("--checkpoint", required=True, help="run folder or checkpoint.pt of a trained model")
    s.add_argument("--out", required=True, help="output folder (created; not a folder holding the inputs)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace label PNGs and overlays that exist already in --out (default: refuse)")
    s.add_argument("--size", type=int, default=None, metavar="PX",
                   help="resize the short side to PX before inference (default: the method's inference size, "
                        "AlignSeg's eval_size; 0 keeps each image's size)")
    s.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default 0.5)")
    s.add_argument("--prompts", default=None, metavar="NAMES",
                   help="comma-separated class names for text-prompted methods (pgseg): label i+1 is the i-th name "
                        "when the model has a background threshold, else label i")
    _model_options(s)

    a = _command(subparsers, "ablate", _cli_ablate,
                 "run a method's ablations (AlignSeg: Table II; DCN: k, stages, foreground rule; TransFGU: "
                 "Table 5; PGSeg: Table 4; SAN: Table 5) into one table",
                 "Train and evaluate one run folder per named ablation of the method, each in "
                 "OUT_DIR/<name>/, and collect their metrics.json into one table (AlignSeg: OUT_DIR/table_ii.csv; "
                 "others: OUT_DIR/ablations.csv) beside the paper's numbers (labelled as the paper's). Rerunning "
                 "resumes.")
    a.add_argument("method", metavar=names)
    a.add_argument("out_dir")
    a.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    a.add_argument("--config", default=None, help="experiment YAML or a shipped name (default world)")
    a.add_argument("--profile", choices=("smoke", "full"), default="smoke",
                   help="smoke: tiny runs and a few ablations (minutes); full: every ablation at the config's size")
    a.add_argument("--only", nargs="+", default=None, metavar="NAME",
                   help="run only these ablations (a key=value word after them whose key is a config field is "
                        "read as an override, as if written before --only)")
    a.add_argument("--eval-limit", type=int, default=None, metavar="N",
                   help="score the first N images (default: the smoke profile's number, or all under --profile full)")
    a.add_argument("-p", "--parameter", dest="parameters", action="append", default=[], type=parse_override,
                   metavar="KEY=VALUE", help="as a config override, KEY lower-cased (kept from the notebook batch: "
                                             "-p WEIGHTS='\"w.pt\"' is weights=w.pt; -p OVERRIDES='{...}' merges)")
    a.add_argument("--no-progress", action="store_true", help="no progress bars")


def _model_options(parser) -> None:
    """Options of the commands that rebuild a trained model from its checkpoint."""
    parser.add_argument("--weights", default=None, help="backbone weights file, if not at the path the checkpoint "
                                                        "names (its sha256 must match)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _cli_train(args) -> int:
    spec = get_method(args.method)
    cfg = load_method_config(spec, args.config, args.overrides)
    run = run_method(spec, cfg, args.run_dir, progress=not args.no_progress, evaluate=not args.no_eval,
                     eval_limit=args.eval_limit, epoch_eval=args.epoch_eval, kmeans=not args.no_kmeans)
    s = run.summary
    state = "finished" if s["finished"] else f"stopped at step {s['steps']} of {s['total_steps']} (rerun to resume)"
    print(f"{spec.kind} in {args.run_dir}: {state}")
    if run.evaluation is not None:
        print(run.evaluation.report())
    print(f"metrics: {run.run_dir / 'metrics.json'}")
    return 0


def _cli_evaluate(args) -> int:
    if args.json:
        source = Path(args.checkpoint)
        check_outputs([args.json], inputs=[source / "checkpoint.pt" if source.is_dir() else source],
                      overwrite=args.overwrite, what="metrics file")
    spec, model, cfg, state = load_trained(args.checkpoint, weights=args.weights, device=args.device)
    step, total = run_progress(state)
    if total and step < total:
        print(f"note: {args.checkpoint} is an unfinished run (step {step} of {total}): these are the scores of a "
              "partly trained model; run the same `nbseg train` command again to finish it")
    if args.data_root is not None:
        model.cfg = dataclasses.replace(cfg, data_root=args.data_root)
    result = spec.evaluate(model, split=args.split, limit=args.limit, kmeans=not args.no_kmeans,
                           progress=not args.no_progress)
    print(f"{spec.title}, step {step}, from {args.checkpoint}")
    print(result.report())
    if args.json:
        atomic_write_json(args.json, {**result.metrics(), "checkpoint": str(args.checkpoint),
                                      "step": step, "total_steps": total, "finished": bool(total and step >= total)})
        print(f"wrote {args.json}")
    if args.figures:
        if spec.figures is None:
            raise ConfigError(f"{spec.title} draws no figures from an evaluation")
        paths = spec.figures(result, args.figures)
        print(f"figures: {', '.join(str(p) for p in paths)}")
    return 0


def _cli_segment(args) -> int:
    check_segment_outputs(args.inputs, args.out, args.overwrite)  # before the model is loaded
    spec, model, cfg, _ = load_trained(args.checkpoint, weights=args.weights, device=args.device)
    if args.prompts is not None:
        if "prompts" not in {f.name for f in dataclasses.fields(cfg)}:
            raise ConfigError(f"{spec.title} segments without text: --prompts is for text-prompted methods "
                              "(pgseg); drop it")
        names = [n.strip() for n in args.prompts.split(",") if n.strip()]
        if not names:
            raise ConfigError(f"--prompts {args.prompts!r} names no class: pass e.g. --prompts \"ball,box\"")
        model.cfg = cfg = dataclasses.replace(cfg, prompts=",".join(names))
    size = spec.inference_size(cfg) if args.size is None else (args.size or None)
    report = segment_images(model, args.inputs, args.out, size=size, alpha=args.alpha,
                            progress=not args.no_progress, overwrite=args.overwrite)
    n_segments = getattr(cfg, "n_prototypes", None) or getattr(cfg, "n_classes", None) or len(model.class_names())
    print(f"{report.summary()}\nlabel PNGs and overlays in {args.out} (model: {spec.title}, "
          f"{model.backbone.describe()}, K={n_segments})")
    return 1 if report.failed else 0


def _ablation_overrides(args) -> dict:
    """``key=value`` overrides, then ``-p KEY=VALUE`` (KEY lower-cased; ``OVERRIDES`` merged)."""
    values = parse_overrides(args.overrides) if args.overrides else {}
    for key, value in args.parameters:
        if key == "OVERRIDES":
            values.update(value)
        else:
            values[key.lower()] = value
    return values


def split_only_words(spec, words) -> tuple[list[str], list[str]]:
    """``--only`` words as (ablation names, ``key=value`` overrides).

    ``--only`` takes one or more words, so ``--only baseline seed=1`` hands it the override too. Ablation names
    may contain ``=`` themselves (``K=5``, ``beta=0.3``), so a word is an ablation name when ``spec.ablations`` has
    it, an override when its key is a field of ``spec.config_class``, and otherwise stays a name (and
    :func:`ablation_names` reports it as unknown)."""
    fields = set(getattr(spec.config_class, "__dataclass_fields__", {}))
    names, overrides = [], []
    for word in words or []:
        key = word.split("=", 1)[0]
        if word not in spec.ablations and "=" in word and key in fields:
            overrides.append(word)
        else:
            names.append(word)
    return names, overrides


def _cli_ablate(args) -> int:
    spec = get_method(args.method)
    if args.only:
        args.only, moved = split_only_words(spec, args.only)
        args.overrides = [*args.overrides, *moved]
    table = run_ablations(spec, args.out_dir, args.only, profile=args.profile, config=args.config,
                          overrides=_ablation_overrides(args), eval_limit=args.eval_limit,
                          progress=not args.no_progress)
    columns = ["ablation", "status", *[c for c in spec.ablation_columns.values() if c.endswith("%")], "paper row",
               spec.paper_column]
    print(table[[c for c in columns if c in table]].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"table: {args.out_dir}/{spec.ablation_table} (paper numbers: {spec.paper.setting}, as reported)")
    return 0 if (table["status"] == "ok").all() else 1
