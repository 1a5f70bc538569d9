"""The ``nbseg`` console command.

Each sub-command lives in the module that owns the computation; that module exposes ``register_cli(subparsers)``
which adds its parser and sets ``func`` (called with the parsed namespace, returning an exit code).

Why the table below: importing the command modules pulls in torch, timm, pandas and scipy (seconds), so
``nbseg --help`` lists the commands from :data:`COMMANDS` alone and only the module of the command being run is
imported (lazy imports at this boundary only; the modules themselves import normally). A test checks that each
line of the table says what its module's own parser says.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from nbseg.consent import UNSAFE_PICKLE_HELP, allow_unsafe_pickle, unsafe_pickle_allowed
from nbseg.errors import NbsegError
from nbseg.io import STORAGE_ERRNOS

# Modules that contribute sub-commands, in the order ``nbseg --help`` lists them.
COMMAND_MODULES = [
    "nbseg.world",            # nbseg world
    "nbseg.data.check",       # nbseg data check
    "nbseg.backbones",        # nbseg backbones (list / info)
    "nbseg.evaluation.cli",   # nbseg eval
    "nbseg.notebook_runner",  # nbseg notebooks run
    "nbseg.pretrain.cli",     # nbseg pretrain / nbseg pretrain export
    "nbseg.pretrain.tags_cli",  # nbseg pretrain-tags / nbseg pretrain-tags export (weak supervision by captions)
    "nbseg.methods.cli",      # nbseg train / evaluate / segment / ablate
    "nbseg.claims.cli",       # nbseg claims
    "nbseg.reproduce",        # nbseg reproduce
]

# command -> (module that registers it, the one-line help `nbseg --help` shows)
COMMANDS = {
    "world": ("nbseg.world", "write the embedded synthetic world (PASCAL VOC layout)"),
    "data": ("nbseg.data.check", "dataset tools (check a dataset root)"),
    "backbones": ("nbseg.backbones", "list known backbones or describe one"),
    "eval": ("nbseg.evaluation.cli", "score predicted cluster maps (PNG folder) against ground truth (PNG folder)"),
    "notebooks": ("nbseg.notebook_runner", "run the numbered notebooks headless and collect their metrics"),
    "pretrain": ("nbseg.pretrain.cli",
                 "DINO self-supervised pretraining of a ViT (resumable); `pretrain export` writes weights"),
    "pretrain-tags": ("nbseg.pretrain.tags_cli",
                      "weakly supervised pretraining of a ViT from caption tags (not DINO; resumable)"),
    "train": ("nbseg.methods.cli", "train a segmentation method (resumable: rerunning resumes)"),
    "evaluate": ("nbseg.methods.cli", "score a trained model (run folder or checkpoint) with its method's evaluation"),
    "segment": ("nbseg.methods.cli", "segment your own images with a trained model: label PNGs and overlays"),
    "ablate": ("nbseg.methods.cli",
               "run a method's ablations (AlignSeg: Table II; DCN: k, stages, foreground rule; TransFGU: Table 5; "
               "PGSeg: Table 4; SAN: Table 5) into one table"),
    "claims": ("nbseg.claims.cli", "measure each implemented paper's central claim over seeds into one table"),
    "reproduce": ("nbseg.reproduce",
                  "run every notebook, ablation batch and the claims table as one resumable plan; write "
                  "OUT_DIR/index.html"),
}


def _requested_command(argv: list[str] | None) -> str | None:
    """The sub-command named on the command line (the first word that is not an option), if any."""
    for word in (sys.argv[1:] if argv is None else argv):
        if not word.startswith("-"):
            return word
    return None


def build_parser(argv: list[str] | None = None, *, everything: bool = False) -> argparse.ArgumentParser:
    """The ``nbseg`` parser. Only the module of the command ``argv`` names is imported (all with ``everything``);
    the other commands appear in ``--help`` from :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="nbseg",
        description="nbseg: unsupervised semantic segmentation with prototypes and frozen self-supervised ViTs.")
    parser.add_argument("--allow-unsafe-pickle", action="store_true", help=UNSAFE_PICKLE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = _requested_command(argv)
    for name in COMMAND_MODULES:
        commands = [c for c, (module, _) in COMMANDS.items() if module == name]
        if everything or wanted in commands or not commands:
            importlib.import_module(name).register_cli(sub)
        else:
            for command in commands:
                sub.add_parser(command, help=COMMANDS[command][1], add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    before = unsafe_pickle_allowed()
    allow_unsafe_pickle(args.allow_unsafe_pickle or before)  # for this command only
    try:
        return int(args.func(args) or 0)
    except (NbsegError, FileNotFoundError) as err:
        if getattr(args, "debug", False):
            raise
        print(f"nbseg {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        # A full disk met outside nbseg.io's writers (a library writing on its own): still one line, not a trace.
        if err.errno not in STORAGE_ERRNOS or getattr(args, "debug", False):
            raise
        print(f"nbseg {args.command}: error: cannot write {err.filename or 'a file'}: {STORAGE_ERRNOS[err.errno]}; "
              "free some space and run the same command again", file=sys.stderr)
        return 2
    finally:
        allow_unsafe_pickle(before)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
