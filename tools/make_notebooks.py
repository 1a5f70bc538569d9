"""Write the numbered notebooks from their cell sources (kept here so notebooks stay thin and reviewable).

    python tools/make_notebooks.py        # rewrites notebooks/*.ipynb without outputs
"""
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def notebook(cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}}
    for kind, src in cells:
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(src.strip()))
        else:
            cell = nbformat.v4.new_code_cell(src.strip())
            if kind == "parameters":
                cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
    for c in nb.cells:
        c.pop("id", None)
    nb.nbformat_minor = 4
    return nb


QUICKSTART = [
    ("md", """
# 00 · Quickstart: what a frozen self-supervised ViT sees

Loads a backbone (default: nbseg's **embedded** ViT-Tiny/8, DINO-pretrained on the synthetic world; never a paper's
numbers), shows its CLS attention and saliency masks on val images, segments them by **per-image** and
**dataset-level** k-means on patch tokens, and scores both with two protocols: dataset-level Hungarian matching and
AlignSeg's released per-image many-to-one precision protocol. Set `COMPARE_RANDOM_INIT` to put the same architecture
at random initialisation beside it. With real weights and data: `BACKBONE="vit_small_patch8_224.dino"`,
`WEIGHTS="/path/dino_deitsmall8_pretrain.pth"`, `DATASET="voc"`, `DATA_ROOT="/path/VOC2012"`, `IMAGE_SIZE=320`.
"""),
    ("parameters", """
SMOKE = False               # smoke profile: a few images, for CI
INTERACTIVE = False         # show ipywidgets controls (off in headless runs)
SEED = 0
OUT_DIR = "artifacts/notebooks/00_quickstart"
DATASET = "world"           # world | voc | cocostuff27 | cityscapes27 | potsdam | potsdam3 | folder
DATA_ROOT = None            # None: the embedded world (generated when absent)
SPLIT = "val"
LABELS = "voc"              # world only: voc (things + background) | full | coarse
IMAGE_SIZE = None           # resize (short side) + centre crop for real data; None keeps the world's 96 px
BACKBONE = "embedded"       # "embedded" or a timm name such as "vit_small_patch8_224.dino"
WEIGHTS = None              # local weights file for a timm name (offline)
RANDOM_INIT = False         # the backbone at random init (a baseline, labelled so everywhere)
COMPARE_RANDOM_INIT = True  # also measure the same architecture at random init
K_PER_IMAGE = 5             # clusters per image (AlignSeg uses 5 prototypes)
K_DATASET = None            # clusters over the dataset; None = number of classes
SALIENCY_FRACTION = 0.6     # keep this fraction of the attention mass (DINO / AlignSeg use 0.6)
N_SHOW = 6                  # images in the figures
LIMIT = None                # images to use; None = all (smoke: 24)
"""),
    ("code", """
from pathlib import Path

import pandas as pd
import torch

import nbseg
from nbseg import backbones, probes, viz
from nbseg.data import load_dataset, CenterCrop, Compose, Resize
from nbseg.io import atomic_write_json, save_figure
from nbseg.notebook_tools import describe_run, require_types

require_types(globals(), SMOKE=bool, INTERACTIVE=bool, SEED=int, OUT_DIR=str, DATASET=str, SPLIT=str,
              LABELS=str, BACKBONE=str, RANDOM_INIT=bool, COMPARE_RANDOM_INIT=bool, K_PER_IMAGE=int,
              SALIENCY_FRACTION=float, N_SHOW=int, DATA_ROOT=(str, type(None)), WEIGHTS=(str, type(None)),
              IMAGE_SIZE=(int, type(None)), K_DATASET=(int, type(None)), LIMIT=(int, type(None)))
torch.manual_seed(SEED)
out = Path(OUT_DIR); out.mkdir(parents=True, exist_ok=True)
limit = 24 if SMOKE and LIMIT is None else LIMIT
transform = Compose([Resize(IMAGE_SIZE), CenterCrop(IMAGE_SIZE)]) if IMAGE_SIZE else None
extra = {"labels": LABELS} if DATASET == "world" else {}
dataset = load_dataset(DATASET, root=DATA_ROOT, split=SPLIT, transform=transform, **extra)
backbone = backbones.load(BACKBONE, WEIGHTS, random_init=RANDOM_INIT)
feats = probes.extract_dataset(backbone, dataset, limit=limit)
print(describe_run(backbone, dataset, n_images=len(feats.ids)))
"""),
    ("md", "## CLS attention of the last block, per head and head mean, with the keep-the-mass saliency mask"),
    ("code", """
from nbseg.saliency import dino_saliency
show = slice(0, N_SHOW)
masks = dino_saliency(feats.attn[show], SALIENCY_FRACTION)
fig = viz.attention_figure(feats.images[show], feats.attn[show], masks=masks,
                           title=f"CLS attention + {SALIENCY_FRACTION:.0%}-mass mask · {feats.title()}")
save_figure(fig, out / "attention.png"); fig
"""),
    ("code", """
fg, valid = probes.foreground_masks(feats.labels)
fig = viz.mask_figure(feats.images[show], probes.upsample_mask(masks, feats.image_size), gt_masks=fg[show],
                      title=f"saliency masks vs ground-truth foreground · {feats.title()}")
save_figure(fig, out / "saliency.png"); fig
"""),
    ("md", "## k-means on patch tokens: each image alone vs one clustering over the whole split"),
    ("code", """
def segment_and_score(fs):
    \"\"\"Per-image and dataset-level k-means, each scored with both protocols (a short table).\"\"\"
    return probes.kmeans_benchmark(fs, dataset, k_per_image=K_PER_IMAGE, k_dataset=K_DATASET, seed=SEED,
                                   saliency_fraction=SALIENCY_FRACTION)

result = segment_and_score(feats)
rows = [result.table]
if COMPARE_RANDOM_INIT and not RANDOM_INIT:
    baseline = backbones.load(BACKBONE, random_init=True, seed=SEED)
    base_feats = probes.extract_dataset(baseline, dataset, limit=limit)
    base_result = segment_and_score(base_feats)
    rows.append(base_result.table)
table = pd.concat(rows, ignore_index=True)
table.to_csv(out / "metrics_table.csv", index=False)
table
"""),
    ("code", """
fig = viz.segmentation_grid(
    feats.images[show], {"ground truth": feats.labels[show], f"per-image k-means (K={K_PER_IMAGE})":
                         result.per_image[show], f"dataset k-means (K={result.k_dataset})": result.dataset[show]},
    title=f"k-means segmentations · {feats.title()}", class_names=dataset.class_names, max_rows=N_SHOW)
save_figure(fig, out / "segmentations.png"); fig
"""),
    ("code", """
if INTERACTIVE:
    from nbseg.widgets import saliency_explorer
    display(saliency_explorer(feats))
"""),
    ("code", """
metrics = {"backbone": backbone.describe(), "dataset": dataset.describe(), "n_images": len(feats.ids),
           "smoke": SMOKE, **result.flat()}
if COMPARE_RANDOM_INIT and not RANDOM_INIT:
    metrics["random_init"] = base_result.flat()
atomic_write_json(out / "metrics.json", metrics)   # the full table is in metrics_table.csv
metrics
"""),
]

if __name__ == "__main__":
    NOTEBOOKS.mkdir(exist_ok=True)
    nbformat.write(notebook(QUICKSTART), NOTEBOOKS / "00_quickstart.ipynb")
    print("wrote", NOTEBOOKS / "00_quickstart.ipynb")
