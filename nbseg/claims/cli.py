"""``nbseg claims OUT_DIR [--profile smoke|full] [--seeds N] [--overwrite]``: each paper's central claim, measured
over seeds, in one table (:mod:`nbseg.claims.runner`)."""
from __future__ import annotations

from nbseg.claims.base import PROFILES


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "claims", help="measure each implemented paper's central claim over seeds into one table",
        description="Run, for every registered method, the experiments that test its paper's central claims "
                    "(MethodSpec.claims), once per seed, on the embedded backbone and the world, and write "
                    "OUT_DIR/claims.csv and OUT_DIR/claims.md: the claim, the paper's own evidence (labelled as the "
                    "paper's), our measurement (mean ± std over seeds; backbone, dataset, protocol, averaging, "
                    "variant) and a verdict with the rule used. Each (claim, seed) result is cached in OUT_DIR as "
                    "soon as it is measured: rerun the same command to resume a killed run; a rerun with everything "
                    "cached only rewrites the table.")
    p.add_argument("out_dir", help="the claims folder (new or empty; an earlier claims run there is resumed)")
    p.add_argument("--profile", choices=PROFILES, default="full",
                   help="smoke: tiny runs (tests, CI; a couple of minutes); full: the sizes the table is read at "
                        "(default; 60 minutes wall on 2 shared CPU cores, measured 2026-11-28)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per claim (default 3; more where the std is "
                                                        "large: the cached seeds are kept)")
    p.add_argument("--methods", nargs="+", default=None, help="only these methods' claims (default: all)")
    p.add_argument("--data-root", default=None, help="the world's root (default: the generated default world)")
    p.add_argument("--weights", default=None, help="another weights file for the embedded backbone")
    p.add_argument("--overwrite", action="store_true",
                   help="discard this folder's cached results, runs and tables and measure again (default: resume)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    from nbseg.claims.runner import CLAIMS_MD, run_claims

    table, stats = run_claims(args.out_dir, profile=args.profile, seeds=args.seeds, overwrite=args.overwrite,
                              data_root=args.data_root, methods=args.methods, weights=args.weights,
                              progress=not args.no_progress)
    print(table[["claim id", "effect", "verdict"]].to_string(index=False))
    print(f"{stats['measured']} measured ({stats['wall_s'] / 60:.1f} min wall, {stats['cpu_s'] / 60:.1f} min CPU), "
          f"{stats['cached']} cached, {stats['failed']} failed; table: {args.out_dir}/{CLAIMS_MD}")
    return 1 if stats["failed"] else 0
