"""Write notebook 11_dcn (DCN: train, the region grid of Fig. 4, Tables 1-2, Fig. 5, region-count analysis) from its
cell sources, with no outputs. Reuses ``notebook()`` from ``tools/make_notebooks.py``. The list of the choices the
paper leaves open is read from the docstrings of ``nbseg.methods.dcn`` and ``nbseg.methods.dcn.regions`` when the
notebook is written, so notebook and code say the same thing.

    python tools/notebooks_dcn.py        # rewrites notebooks/11_dcn.ipynb
"""
import runpy
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_notebooks import NOTEBOOKS, notebook  # noqa: E402

STEM = "11_dcn"


# The open choices are read from the code's docstrings by nbseg/methods/dcn/choices.py, run as a file (standard
# library only): the generator never imports nbseg.
CHOICES = Path(__file__).resolve().parents[1] / "nbseg" / "methods" / "dcn" / "choices.py"


def cells() -> list:
    open_choices_markdown = runpy.run_path(str(CHOICES))["open_choices_markdown"]
    return [
        ("md", """
# 11 · DCN: dynamic clustering of a frozen ViT's pixel embeddings

DCN (Li et al. 2022, "Dynamic Clustering Network for Unsupervised Semantic Segmentation"): K learnable prototypes
become per-image cluster centres through alternating cross-attention to the frozen ViT's pixel embeddings and
self-attention (Eq. 1-4); pixels take the nearest centre by cosine (Eq. 5-6), so each image gets its **own number of
regions**; training maximises a soft modularity of the pixel affinity graph (Eq. 7-10). Regions are then classified
without labels (Sec. 4): masked region crops through the ViT, foreground regions by attention, k-means over the
split (Table 1, mean +- std over seeds) and weighted k-NN against training regions (Table 2).

This notebook trains DCN (or **resumes** it: rerunning continues the run folder) on cached features through
`nbseg.methods.dcn.evaluation`, then draws the region grid (Fig. 4), Tables 1-2 with the paper's numbers **labelled as
the paper's** (PASCAL VOC 2012 val, DINO ViT-S/8), the retrieval grid (Fig. 5) and the region-count analysis
(regions per image against ground-truth classes per image).

Defaults: the synthetic world with nbseg's **embedded** ViT-Tiny/8 (weakly supervised by captions, not DINO): never a paper's
numbers. With the paper's data and weights: `CONFIG="voc"`, `DATASET="voc"`, `DATA_ROOT="/path/VOC2012"`,
`BACKBONE="vit_small_patch8_224.dino"`, `WEIGHTS="/path/dino_deitsmall8_pretrain.pth"` (the config holds the
paper's settings: 224 px, 5 prototypes, 6 stages, AdamW 1e-4, batch 32, 2500 iterations).
"""),
        ("parameters", """
SMOKE = False               # smoke profile: 64 train images, batch 16, 24 steps, 32 val images, 3 k-means seeds (CI)
INTERACTIVE = False         # an image picker over the region grid (ipywidgets)
SEED = 0                    # DCN's initialisation and batches; k-means seeds are 0 .. N_SEEDS - 1
OUT_DIR = "artifacts/notebooks/11_dcn"
CONFIG = None               # None or "world": configs/dcn_world.yaml; "voc": the paper's settings; or a YAML path
DATASET = "world"           # world | voc | ... (set CONFIG to match)
DATA_ROOT = None            # None: the embedded world (generated when absent)
LABELS = "voc"              # world only: the label set scored (voc = things + background | full | coarse)
BACKBONE = "embedded"       # "embedded" or a timm name such as "vit_small_patch8_224.dino" (CONFIG="voc")
WEIGHTS = None              # backbone weights file; None: the shipped file (embedded) or the hub (timm names)
RANDOM_INIT = False         # the backbone at random init (a baseline, labelled RANDOM INIT everywhere)
RUN_DIR = None              # training run folder; None: OUT_DIR/run. Rerunning resumes it
CACHE_ROOT = None           # feature cache root; None: artifacts/feature_cache in the checkout
OVERRIDES = {}              # any other config key, e.g. {"n_stages": 3, "n_prototypes": 8}
MAX_STEPS = None            # training iterations; None: the config's (2500; smoke 24)
LIMIT = None                # train on the first N training images; None: the split (smoke 64)
VAL_LIMIT = None            # score the first N val images; None: all (smoke 32)
GALLERY_LIMIT = None        # k-NN gallery: the first N training images; None: all DCN trained on (smoke 32)
N_SEEDS = 10                # k-means runs for Table 1 and the baseline (paper: 10; smoke 3)
KS = [1, 3, 5, 10]          # Table 2's k
N_SHOW = 6                  # images in the region grid
"""),
        ("code", """
from pathlib import Path

import torch
from IPython.display import Image, Markdown, display

from nbseg.io import atomic_write_json, atomic_write_text, save_figure
from nbseg.methods.dcn import evaluation as de, figures as dfig
from nbseg.notebook_tools import require_types

require_types(globals(), SMOKE=bool, INTERACTIVE=bool, SEED=int, OUT_DIR=str, CONFIG=(str, type(None)), DATASET=str,
              DATA_ROOT=(str, type(None)), LABELS=str, BACKBONE=str, WEIGHTS=(str, type(None)), RANDOM_INIT=bool,
              RUN_DIR=(str, type(None)), CACHE_ROOT=(str, type(None)), OVERRIDES=dict, MAX_STEPS=(int, type(None)),
              LIMIT=(int, type(None)), VAL_LIMIT=(int, type(None)), GALLERY_LIMIT=(int, type(None)), N_SEEDS=int,
              KS=list, N_SHOW=int)
torch.manual_seed(SEED)
out = Path(OUT_DIR); out.mkdir(parents=True, exist_ok=True)
settings = {"backbone": BACKBONE, "weights": WEIGHTS, "random_init": RANDOM_INIT, "data": DATASET,
            "data_root": DATA_ROOT, "labels": LABELS, "cache_root": CACHE_ROOT, "seed": SEED, **OVERRIDES}
cfg = de.notebook_config(CONFIG, settings, smoke=SMOKE, max_steps=MAX_STEPS, limit=LIMIT)
val_limit = de.SMOKE_VAL_LIMIT if SMOKE and VAL_LIMIT is None else VAL_LIMIT
gallery_limit = de.SMOKE_GALLERY_LIMIT if SMOKE and GALLERY_LIMIT is None else GALLERY_LIMIT
seeds = range(min(N_SEEDS, de.SMOKE_SEEDS) if SMOKE else N_SEEDS)
print(f"DCN: K={cfg.n_prototypes} prototypes, {cfg.n_stages} stages, {cfg.data}/{cfg.split} at {cfg.input_size} px, "
      f"batch {cfg.batch_size}, lr {cfg.lr}, {cfg.max_steps} iterations")
"""),
        ("md", "## The choices the paper leaves open, and ours\n\n(Read from the docstrings of "
               "`nbseg.methods.dcn` and `nbseg.methods.dcn.regions` when this notebook was written.)\n\n"
               + open_choices_markdown()),
        ("md", "## Train (resumable) on cached features"),
        ("code", """
method, summary = de.train_dcn(cfg, RUN_DIR or out / "run")
run_dir = Path(summary["run_dir"])
print(f"{summary['steps']}/{summary['total_steps']} steps in {run_dir}, final loss {summary['loss']:.4f} "
      f"(-modularity); backbone: {method.backbone.describe()}")
if (run_dir / "loss_curve.png").is_file():
    display(Image(filename=str(run_dir / "loss_curve.png")))
"""),
        ("md", """
## Evaluate: regions, region embeddings, foreground, k-means (Table 1), k-NN (Table 2), region counts

Region maps are computed at each image's own size (soft assignment upsampled bilinearly, then argmax). The k-NN
gallery holds the regions of training images, each labelled by the ground-truth class it overlaps most.
"""),
        ("code", """
ev = de.evaluate_dcn(method, val_limit=val_limit, gallery_limit=gallery_limit, seeds=seeds, ks=KS)
print(ev.title())
"""),
        ("md", "## Fig. 4: the dynamic regions of DCN, DCN + k-means, ground truth (fewest to most regions)"),
        ("code", """
show = dfig.show_indices(ev, N_SHOW)
fig = dfig.region_grid(ev, show)
save_figure(fig, out / "fig4_regions.png"); display(fig)
"""),
        ("md", """
## Table 1: k-means of the foreground regions (mean +- std over k-means seeds), Hungarian mIoU

The paper's rows are **as reported** (PASCAL VOC 2012 val; DCN with DINO ViT-S/8). The nbseg rows name the backbone,
its weights and the dataset; the baseline is one k-means over all patch tokens of the split into as many clusters
as classes, scored the same way.
"""),
        ("code", """
table_1 = ev.table_1()
atomic_write_text(out / "table_1.csv", table_1.to_csv(index=False))
table_1.round(2)
"""),
        ("md", "## Table 2: weighted k-NN region classification (identity matching; the paper's rows as reported)"),
        ("code", """
table_2 = ev.table_2()
atomic_write_text(out / "table_2.csv", table_2.to_csv(index=False))
table_2.pivot_table(index="k", columns=["source", "encoder", "dataset"], values=["miou %", "acc %"]).round(2)
"""),
        ("md", "## Fig. 5: query regions and their nearest training regions"),
        ("code", """
fig = dfig.retrieval(ev, k=5, n_queries=min(N_SHOW, 6), seed=SEED)
save_figure(fig, out / "fig5_retrieval.png"); display(fig)
"""),
        ("md", """
## How many regions? Regions per image against ground-truth classes per image

DCN's claim: complex scenes get more regions than simple ones. Counted at the image size; argmax after bilinear
upsampling can leave thin slivers, so regions of at least 1% of the image are counted too. On the world the
things-and-stuff labels (`full`) say how many kinds of things a scene holds.
"""),
        ("code", """
counts, correlations = ev.region_counts(), ev.count_correlations()
atomic_write_text(out / "region_counts.csv", counts.to_csv(index=False))
atomic_write_text(out / "count_correlations.csv", correlations.to_csv(index=False))
for name, fig in (("region_counts", dfig.region_count_figure(ev)), ("regions_vs_classes",
                                                                    dfig.regions_vs_classes_figure(ev))):
    save_figure(fig, out / f"{name}.png"); display(fig)
correlations.round(3)
"""),
        ("code", """
if INTERACTIVE:   # image picker over the region grid
    display(dfig.region_explorer(ev))
"""),
        ("code", """
metrics = {**ev.metrics(), "smoke": SMOKE, "config": str(de.config_path(CONFIG)),
           "overrides": OVERRIDES, "run_dir": str(run_dir), "steps": summary["steps"],
           "total_steps": summary["total_steps"], "finished": summary["finished"], "final_loss": summary["loss"],
           "train_seconds": round(summary["seconds"], 1), "batch_size": cfg.batch_size,
           "train_images": de.train_images(cfg), "ks": list(KS)}
atomic_write_json(out / "metrics.json", metrics)
print(f"wrote {out / 'metrics.json'}")
"""),
    ]


def main() -> Path:
    NOTEBOOKS.mkdir(exist_ok=True)
    path = NOTEBOOKS / f"{STEM}.ipynb"
    nbformat.write(notebook(cells()), path)
    print("wrote", path)
    return path


if __name__ == "__main__":
    main()
