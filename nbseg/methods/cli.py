"""Method commands: ``nbseg train``, ``nbseg evaluate``, ``nbseg segment`` and ``nbseg ablate``.

* ``nbseg train alignseg RUN_DIR [--config YAML] [key=value ...]`` - train AlignSeg in RUN_DIR; running the same
  command again resumes it exactly (a finished run is only evaluated again). At the end the model is scored on the
  config's ``eval_split`` with both protocols, beside k-means on the same features: ``RUN_DIR/metrics.json``.
* ``nbseg evaluate RUN_DIR_or_CKPT`` - rebuild the model from its checkpoint (config and backbone from the
  checkpoint) and score it with both protocols.
* ``nbseg segment --checkpoint CKPT IMAGE_OR_DIR... --out DIR`` - label PNGs and overlays for your own images.
* ``nbseg ablate alignseg OUT_DIR`` - the Table II ablations as a papermill batch of notebook 10_alignseg.

The work is done by :mod:`nbseg.methods.alignseg_eval`, :mod:`~nbseg.methods.alignseg_segment` and
:mod:`~nbseg.methods.alignseg_batch`, which the notebook uses too.
"""
from __future__ import annotations

import argparse

METHODS = ("alignseg", "dcn")

TRAIN_EPILOG = """\
examples:
  nbseg train alignseg runs/alignseg_world                          # the world, embedded backbone, official variant
  nbseg train alignseg runs/alignseg_paper variant=paper epochs=5
  nbseg train alignseg runs/alignseg_world max_steps=100            # stop early; rerun without it to resume
  nbseg train alignseg runs/voc --config voc data_root=/data/VOC2012 weights=/w/dino_deitsmall16_pretrain.pth

  nbseg train dcn runs/dcn_world                                    # DCN on cached features of the world
  nbseg train dcn runs/dcn_voc --config voc data_root=/data/VOC2012 weights=/w/dino_deitsmall8_pretrain.pth

--config: a YAML file, or a shipped name. AlignSeg: world (default: nbseg/configs/alignseg_world.yaml, for the
embedded backbone on the world), voc or cocostuff27 (the paper's settings with DINO ViT-S/16 and the released schedule; pass
data_root=PATH and weights=PATH).
DCN: world (default, nbseg/configs/dcn_world.yaml) or voc (DINO ViT-S/8, pass data_root=PATH and weights=PATH).
AlignSeg config keys: {keys}
DCN config keys: {dcn_keys}
"""


def _command(subparsers, name: str, func, summary: str, description: str, **kw):
    """A sub-command whose ``--debug`` shows tracebacks and whose ``func`` runs it."""
    parser = subparsers.add_parser(name, help=summary, description=description, **kw)
    parser.set_defaults(func=func)
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return parser


def register_cli(subparsers) -> None:
    from nbseg.methods.alignseg import AlignSegConfig
    from nbseg.methods.dcn import DCNConfig

    p = _command(subparsers, "train", _cli_train, "train a segmentation method (resumable: rerunning resumes)",
                 "Train a method in RUN_DIR (created; an existing run folder is resumed exactly, a finished one is "
                 "only evaluated). Writes config.yaml, provenance.json, checkpoint.pt (atomic), log.csv, "
                 "loss_curve.png and, after scoring on the evaluation split with both protocols, metrics.json and "
                 "evaluation.csv.", formatter_class=argparse.RawDescriptionHelpFormatter,
                 epilog=TRAIN_EPILOG.format(keys=", ".join(AlignSegConfig.__dataclass_fields__),
                                            dcn_keys=", ".join(DCNConfig.__dataclass_fields__)))
    p.add_argument("method", choices=METHODS, help="the method to train")
    p.add_argument("run_dir", help="run folder")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (unknown keys are errors)")
    p.add_argument("--config", default=None,
                   help="experiment YAML or a shipped name (world | voc | cocostuff27; default world)")
    p.add_argument("--no-eval", action="store_true", help="train only; metrics.json then holds no scores")
    p.add_argument("--eval-limit", type=int, default=None, metavar="N", help="score the first N images only")
    p.add_argument("--epoch-eval", action="store_true",
                   help="also score AlignSeg at every epoch end (RUN_DIR/metrics.csv)")
    p.add_argument("--no-kmeans", action="store_true", help="skip the k-means baselines")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    e = _command(subparsers, "evaluate", _cli_evaluate,
                 "score a trained model (run folder or checkpoint) with both protocols",
                 "Rebuild a trained model from RUN_DIR/checkpoint.pt (its stored config and backbone) and score it "
                 "on a labelled split with both protocols: dataset-level Hungarian and AlignSeg's per-image "
                 "many-to-one precision protocol at 100x100, beside per-image and dataset-level k-means on the same "
                 "frozen features.")
    e.add_argument("checkpoint", help="run folder or checkpoint.pt")
    e.add_argument("--data-root", default=None, help="dataset root, if not the one in the checkpoint's config")
    e.add_argument("--split", default=None, help="split to score (default: the config's eval_split)")
    e.add_argument("--limit", type=int, default=None, metavar="N", help="score the first N images only")
    e.add_argument("--no-kmeans", action="store_true", help="skip the k-means baselines")
    e.add_argument("--json", default=None, metavar="FILE", help="also write the flat metrics as JSON (atomic)")
    e.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists (default: refuse)")
    _model_options(e)

    s = _command(subparsers, "segment", _cli_segment,
                 "segment your own images with a trained model: label PNGs and overlays",
                 "Write NAME.png (prototype ids as a palette PNG at the image's size) and NAME_overlay.png for every "
                 "image (files, or the images in folders). Writes are atomic; an unreadable image is skipped and "
                 "reported (exit status 1), the others are still written. --out may not be a folder holding the "
                 "inputs, and existing outputs are kept unless --overwrite is given.")
    s.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders of images")
    s.add_argument("--checkpoint", required=True, help="run folder or checkpoint.pt of a trained model")
    s.add_argument("--out", required=True, help="output folder (created; not a folder holding the inputs)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace label PNGs and overlays that exist already in --out (default: refuse)")
    s.add_argument("--size", type=int, default=None, metavar="PX",
                   help="resize the short side to PX before inference (default: the model's eval_size; 0 keeps "
                        "each image's size)")
    s.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default 0.5)")
    _model_options(s)

    a = _command(subparsers, "ablate", _cli_ablate,
                 "run a method's ablations (AlignSeg Table II) as a notebook batch and collect one table",
                 "Run notebook 10_alignseg once per Table II ablation (L, K, v_l, loss terms, batch, epochs) with "
                 "papermill, each into OUT_DIR/<name>/, and collect their metrics.json into OUT_DIR/table_ii.csv "
                 "beside the paper's numbers (labelled as the paper's). Rerunning resumes.")
    a.add_argument("method", choices=METHODS)
    a.add_argument("out_dir")
    a.add_argument("--profile", choices=("smoke", "full"), default="smoke",
                   help="smoke: tiny runs and 3 ablations (minutes); full: every ablation at the config's size")
    a.add_argument("--only", nargs="+", default=None, metavar="NAME", help="run only these ablations")
    from nbseg.notebook_runner import parse_override

    a.add_argument("-p", "--parameter", dest="parameters", action="append", default=[], type=parse_override,
                   metavar="KEY=VALUE", help="notebook parameter for every run, e.g. -p WEIGHTS='\"w.pt\"'")
    a.add_argument("--timeout", type=float, default=None, help="time limit per notebook cell in seconds")


def _model_options(parser) -> None:
    """Options of the commands that rebuild a trained model from its checkpoint."""
    parser.add_argument("--weights", default=None, help="backbone weights file, if not at the path the checkpoint "
                                                        "names (its sha256 must match)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _print_table(table) -> None:
    shown = table.copy()
    for column in ("miou", "pixel_acc", "miou_excl_first"):
        shown[column] = 100 * shown[column].astype(float)
    columns = ["method", "K", "protocol", "scored_at", "miou", "pixel_acc", "miou_excl_first", "n_images"]
    print(shown[columns].rename(columns={"miou": "mIoU %", "pixel_acc": "pixel acc %",
                                         "miou_excl_first": "mIoU excl. first %"})
          .to_string(index=False, float_format=lambda v: f"{v:.2f}", na_rep="-"))


def _cli_train(args) -> int:
    from nbseg.methods.alignseg_eval import load_alignseg_config, run_alignseg

    if args.method == "dcn":
        return _cli_train_dcn(args)
    cfg = load_alignseg_config(args.config, args.overrides)
    run = run_alignseg(cfg, args.run_dir, progress=not args.no_progress, evaluate=not args.no_eval,
                       eval_limit=args.eval_limit, epoch_eval=args.epoch_eval, kmeans=not args.no_kmeans)
    s = run.summary
    state = "finished" if s["finished"] else f"stopped at step {s['steps']} of {s['total_steps']} (rerun to resume)"
    print(f"AlignSeg ({cfg.variant} variant) in {args.run_dir}: {state}")
    if run.evaluation is not None:
        d = run.evaluation.description
        print(f"scored on {d['dataset']} with {d['backbone']}")
        _print_table(run.evaluation.table)
    print(f"metrics: {run.run_dir / 'metrics.json'}")
    return 0


def _cli_train_dcn(args) -> int:
    """DCN: train on the cached features (built first when absent), then Tables 1-2 and the region counts on the
    val split, written to RUN_DIR/metrics.json (the same functions as notebook 11_dcn)."""
    from pathlib import Path

    from nbseg.io import atomic_write_json
    from nbseg.methods.dcn_eval import evaluate_dcn, load_dcn_config, train_dcn

    cfg = load_dcn_config(args.config, args.overrides)
    method, s = train_dcn(cfg, args.run_dir, progress=not args.no_progress)
    state = "finished" if s["finished"] else f"stopped at step {s['steps']} of {s['total_steps']} (rerun to resume)"
    print(f"DCN in {args.run_dir}: {state}")
    if args.no_eval:
        return 0
    ev = evaluate_dcn(method, val_limit=args.eval_limit, progress=not args.no_progress)
    print(ev.title())
    print(ev.table_1().to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(ev.table_2().to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    out = Path(args.run_dir) / "metrics.json"
    atomic_write_json(out, {**ev.metrics(), "steps": s["steps"], "finished": s["finished"]})
    print(f"metrics: {out}")
    return 0


def _cli_evaluate(args) -> int:
    import dataclasses
    from pathlib import Path

    from nbseg.io import atomic_write_json, check_outputs
    from nbseg.methods.alignseg import evaluation_dataset
    from nbseg.methods.alignseg_eval import evaluate_alignseg, load_alignseg
    from nbseg.train.run_folder import run_progress

    if args.json:
        source = Path(args.checkpoint)
        check_outputs([args.json], inputs=[source / "checkpoint.pt" if source.is_dir() else source],
                      overwrite=args.overwrite, what="metrics file")
    method, cfg, state = load_alignseg(args.checkpoint, weights=args.weights, device=args.device)
    step, total = run_progress(state)
    if total and step < total:
        print(f"note: {args.checkpoint} is an unfinished run (step {step} of {total}): these are the scores of a "
              "partly trained model; run the same `nbseg train` command again to finish it")
    if args.data_root is not None:
        cfg = dataclasses.replace(cfg, data_root=args.data_root)
    dataset = evaluation_dataset(cfg, args.split)
    result = evaluate_alignseg(method, dataset, limit=args.limit, kmeans=not args.no_kmeans, seed=cfg.seed,
                               progress=not args.no_progress)
    d = result.description
    print(f"AlignSeg ({d['variant']} variant, step {state['step']}) from {args.checkpoint}")
    print(f"scored on {d['dataset']} with {d['backbone']}")
    _print_table(result.table)
    if args.json:
        atomic_write_json(args.json, {**result.metrics(), "checkpoint": str(args.checkpoint),
                                      "step": step, "total_steps": total, "finished": bool(total and step >= total)})
        print(f"wrote {args.json}")
    return 0


def _cli_segment(args) -> int:
    from nbseg.methods.alignseg_eval import load_alignseg
    from nbseg.methods.alignseg_segment import check_segment_outputs, segment_images

    check_segment_outputs(args.inputs, args.out, args.overwrite)  # before the model is loaded
    method, cfg, _ = load_alignseg(args.checkpoint, weights=args.weights, device=args.device)
    size = cfg.eval_size if args.size is None else (args.size or None)
    report = segment_images(method, args.inputs, args.out, size=size, alpha=args.alpha,
                            progress=not args.no_progress, overwrite=args.overwrite)
    print(f"{report.summary()}\nlabel PNGs and overlays in {args.out} (model: {method.backbone.describe()}, "
          f"{cfg.variant} variant, K={cfg.n_prototypes})")
    return 1 if report.failed else 0


def _cli_ablate(args) -> int:
    from nbseg.methods.alignseg_batch import PAPER_COLUMN, run_table_ii

    table = run_table_ii(args.out_dir, args.only, profile=args.profile, parameters=dict(args.parameters),
                         timeout=args.timeout)
    columns = [c for c in ("ablation", "status", "AlignSeg hungarian %", "AlignSeg per-image %",
                           "per-image k-means hungarian %", "dataset k-means hungarian %", "paper row",
                           PAPER_COLUMN) if c in table]
    print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"table: {args.out_dir}/table_ii.csv (paper numbers: PVOC with DINO ViT-S/16, as reported)")
    return 0 if (table["status"] == "ok").all() else 1
