"""Write notebook 10_alignseg (AlignSeg: train, evaluate with both protocols, the paper's tables and figures) from
its cell sources, with no outputs. Reuses ``notebook()`` from ``tools/make_notebooks.py``.

    python tools/notebooks_alignseg.py        # rewrites notebooks/10_alignseg.ipynb
"""
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_notebooks import NOTEBOOKS, notebook  # noqa: E402

ALIGNSEG = [
    ("md", """
# 10 · AlignSeg: train, evaluate, probe the prototypes

AlignSeg (Liu et al., TPAMI 2024): a frozen self-supervised ViT, a one-layer Transformer decoder with K learnable
prototypes, trained by prototype-image and global-local alignment; inference is one argmax per pixel. This notebook
trains (or **resumes**: rerunning continues the run folder) through `nbseg.methods.alignseg.evaluation`, then scores it
with **both protocols** beside **per-image** and **dataset-level k-means** on the same frozen features:
dataset-level Hungarian matching (one confusion matrix over the split) and AlignSeg's released per-image
many-to-one precision protocol at 100x100. Figures: qualitative grid (Fig. 5 / 8), AlignSeg vs k-means (Fig. 9),
t-SNE of patch embeddings with the image-adapted prototypes (Fig. 7), prototype-vs-class similarity (Table IV), and
Table I with the paper's numbers **labelled as the paper's**.

Defaults: the synthetic world with nbseg's **embedded** ViT-Tiny/8: never a paper's number. With the paper's data and
weights: `CONFIG="voc"`, `DATASET="voc"`, `DATA_ROOT="/path/VOC2012"`, `BACKBONE="vit_small_patch16_224.dino"`,
`WEIGHTS="/path/dino_deitsmall16_pretrain.pth"` (the config holds the released settings and schedule).
Table II's ablations run through the library, one run folder each, into one table: `nbseg ablate alignseg OUT
--profile smoke|full`; `OVERRIDES` and `EPOCH_SCALE` here rerun one of them by hand.
"""),
    ("parameters", """
SMOKE = False               # smoke profile: 64 train images, batch 16, 2 epochs, 32 scored images (CI)
INTERACTIVE = False         # no widgets in this notebook; kept for the runner's contract
SEED = 0
OUT_DIR = "artifacts/notebooks/10_alignseg"
RUN_DIR = None              # training run folder; None: OUT_DIR/run. Rerunning resumes it
CONFIG = None               # None or "world": configs/alignseg_world.yaml; "voc", "cocostuff27": the paper's; or a YAML
DATASET = "world"           # world | voc | cocostuff27 | ... (set CONFIG to match)
DATA_ROOT = None            # None: the embedded world (generated when absent)
LABELS = "voc"              # world only, the label set scored: voc (things and background), full or coarse
BACKBONE = "embedded"       # "embedded" or a timm name such as "vit_small_patch16_224.dino" (with the voc config)
WEIGHTS = None              # backbone weights file; None: the shipped file (embedded) or the hub (timm names)
VARIANT = "official"        # "official" (the released code's losses) | "paper" (the equations as printed)
OVERRIDES = {}              # any other config key, e.g. {"n_prototypes": 5, "h": 0.3, "alpha": 0.0}
EPOCHS = None               # None: the config's (smoke: 2)
EPOCH_SCALE = 1             # multiply the epochs (Table II (c))
TRAIN_LIMIT = None          # train on the first N images; None: the whole split (smoke: 64)
VAL_LIMIT = None            # score the first N images; None: the whole split (smoke: 32)
EPOCH_EVAL = True           # score AlignSeg at every epoch end (a curve)
KMEANS = True               # per-image and dataset-level k-means baselines with the same K
FIGURES = True              # draw the figures and Table IV
N_SHOW = 6                  # images in the qualitative figures (smoke: 3)
N_TSNE = 2                  # images in the t-SNE figure (Fig. 7)
TABLE_TEMPERATURE = 0.1     # Table IV softmax temperature (the released script scales cosines by 10)
"""),
    ("code", """
from pathlib import Path

import pandas as pd
import torch
from IPython.display import display

from nbseg.io import atomic_write_json, atomic_write_text, save_figure
from nbseg.methods.alignseg import evaluation as ae, figures as af
from nbseg.notebook_tools import require_types

require_types(globals(), SMOKE=bool, INTERACTIVE=bool, SEED=int, OUT_DIR=str, RUN_DIR=(str, type(None)),
              CONFIG=(str, type(None)), DATASET=str, DATA_ROOT=(str, type(None)), LABELS=str, BACKBONE=str,
              WEIGHTS=(str, type(None)), VARIANT=str, OVERRIDES=dict, EPOCHS=(int, type(None)), EPOCH_SCALE=int,
              TRAIN_LIMIT=(int, type(None)), VAL_LIMIT=(int, type(None)), EPOCH_EVAL=bool, KMEANS=bool,
              FIGURES=bool, N_SHOW=int, N_TSNE=int, TABLE_TEMPERATURE=float)
torch.manual_seed(SEED)
out = Path(OUT_DIR); out.mkdir(parents=True, exist_ok=True)
settings = {"backbone": BACKBONE, "weights": WEIGHTS, "variant": VARIANT, "data": DATASET, "data_root": DATA_ROOT,
            "labels": LABELS, "seed": SEED, **OVERRIDES}
cfg = ae.notebook_config(CONFIG, settings, smoke=SMOKE, epochs=EPOCHS, epoch_scale=EPOCH_SCALE,
                         train_limit=TRAIN_LIMIT)
val_limit = 32 if SMOKE and VAL_LIMIT is None else VAL_LIMIT
run = ae.run_alignseg(cfg, RUN_DIR or out / "run", eval_limit=val_limit, epoch_eval=EPOCH_EVAL, kmeans=KMEANS)
ev = run.evaluation
print(f"AlignSeg ({cfg.variant}), K={cfg.n_prototypes}, L={cfg.n_layers}, v_l={cfg.n_local}, "
      f"{run.summary['steps']}/{run.summary['total_steps']} steps in {run.run_dir}")
print(f"backbone: {ev.description['backbone']} · scored on: {ev.description['dataset']}")
"""),
    ("md", """
## Scores: AlignSeg end to end vs k-means on the same features, both protocols

`hungarian`: one confusion matrix over the split, one-to-one matching (what a class-consistent segmentation needs).
`per-image`: AlignSeg's released protocol, every image matched on its own (many-to-one, precision), scored at
100x100: far more lenient, and it favours many small clusters.
"""),
    ("code", """
atomic_write_text(out / "evaluation.csv", ev.table.to_csv(index=False))
display(af.miou_bars(ev))
for fig in af.training_curves(run.run_dir, ev):
    display(fig)
ev.table
"""),
    ("md", "## Qualitative results: images / ground truth / AlignSeg / each prototype's region (Figs. 5, 8)"),
    ("code", """
show = af.show_indices(ev, 3 if SMOKE else N_SHOW)
if FIGURES:
    fig = af.qualitative_figure(ev, show)
    save_figure(fig, out / "qualitative.png"); display(fig)
"""),
    ("md", "## Fig. 9: AlignSeg vs per-image k-means (and dataset-level k-means), same K, same features"),
    ("code", """
if FIGURES and KMEANS:
    fig = af.kmeans_comparison_figure(ev, show)
    save_figure(fig, out / "fig9_kmeans.png"); display(fig)
"""),
    ("md", """
## Table IV: prototypes vs classes

Cosine of each prototype with each class's mean patch embedding (from the ground-truth masks), softmax over the
classes. Rows: the mean image-adapted prototypes P^x (what segments); the learnt queries P are saved beside them.
"""),
    ("code", """
table_iv = {}
if FIGURES:
    for which in ("mean image-adapted P^x", "learnt P"):
        table_iv[which] = af.table_iv(run.method, ev.features, ev.dataset, which=which,
                                      temperature=TABLE_TEMPERATURE)
        name = "table_iv_" + ("adapted" if which.startswith("mean") else "learnt")
        atomic_write_text(out / f"{name}.csv", table_iv[which].to_csv())
    fig = af.table_iv_figure(table_iv["mean image-adapted P^x"], ev, temperature=TABLE_TEMPERATURE)
    save_figure(fig, out / "table_iv.png"); display(fig)
    display(table_iv["mean image-adapted P^x"].round(2))
"""),
    ("md", "## Fig. 7: t-SNE of one image's patch embeddings with its image-adapted prototypes (stars)"),
    ("code", """
if FIGURES:
    fig = af.tsne_figure(run.method, ev, show[:N_TSNE], seed=SEED)
    save_figure(fig, out / "fig7_tsne.png"); display(fig)
"""),
    ("md", """
## Table I: the paper's numbers (PASCAL VOC 2012 / COCO-Stuff-27, DINO ViT-S/16, as reported) beside this run

The nbseg rows name their backbone, weights, dataset and variant; they are not comparable with the paper's rows
unless those match (real data, real weights).
"""),
    ("code", """
table_i = af.table_i(ev)
atomic_write_text(out / "table_i.csv", table_i.to_csv(index=False))
af.table_i_wide(table_i).round(1)
"""),
    ("code", """
metrics = {**run.metrics, "smoke": SMOKE, "config": str(ae.config_file(CONFIG)), "overrides": OVERRIDES,
           "epochs": cfg.epochs, "batch_size": cfg.batch_size}
for which, table in table_iv.items():
    metrics[f"table_iv/{which}/max_share"] = float(table.to_numpy().max())
atomic_write_json(out / "metrics.json", metrics)
print(f"wrote {out / 'metrics.json'}")
"""),
]

if __name__ == "__main__":
    NOTEBOOKS.mkdir(exist_ok=True)
    path = NOTEBOOKS / "10_alignseg.ipynb"
    nbformat.write(notebook(ALIGNSEG), path)
    print("wrote", path)
