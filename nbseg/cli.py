"""The ``nbseg`` console command.

Each sub-command lives in the module that owns the computation; that module exposes ``register_cli(subparsers)``
which adds its parser and sets ``func`` (called with the parsed namespace, returning an exit code). Modules are
imported lazily on start so ``nbseg --help`` stays fast and one broken optional dependency names itself.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from nbseg.errors import NbsegError

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
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbseg",
        description="nbseg: unsupervised semantic segmentation with prototypes and frozen self-supervised ViTs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (NbsegError, FileNotFoundError) as err:
        if getattr(args, "debug", False):
            raise
        print(f"nbseg {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
