"""Write notebook 12_transfgu (TransFGU: crops and concepts, Grad-CAM maps beside the attention, pseudo labels against
the ground truth, the student over bootstrapping rounds, Tables 1, 3 and 5 beside the paper's numbers) from its cell
sources, with no outputs. Reuses ``notebook()`` from ``tools/make_notebooks.py``; never imports nbseg.

    python tools/notebooks_transfgu.py        # rewrites notebooks/12_transfgu.ipynb
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_notebooks import write_notebook  # noqa: E402

STEM = "12_transfgu"


def cells() -> list:
    return [
        ("md", """
# 12 · TransFGU: top-down concepts, Grad-CAM pseudo labels, bootstrapped Segmenter

TransFGU (Yin et al., ECCV 2022): CLS tokens of sliding-window crops are clustered into K **concepts** (foreground
crops into things, background crops into stuff); each concept is mapped to the pixels by **Grad-CAM** on the last
block's attention (Eq. 5-7), giving pseudo labels; a **Segmenter** decoder on the frozen patch tokens learns them with
peer, uncertainty and diversity losses (Eq. 13-16), and **bootstrapping** rounds refresh a teacher from the student
and restart the student (Sec. 3.3).

Every stage is stored and resumable (crop bank, concepts, pseudo labels in the cache; the rounds in the run folder):
rerunning this notebook continues where it stopped. `VARIANT` picks the released code (`official`) or the paper's
equations (`paper`); every table names it.

Defaults: the synthetic world with nbseg's **embedded** ViT-Tiny/8 (weakly supervised by captions, not DINO): never a
paper's numbers. With the paper's data and weights: `CONFIG="voc"` (or `"cocostuff27"`), `DATASET="voc"`,
`DATA_ROOT=...`, `BACKBONE="vit_small_patch8_224.dino"`, `WEIGHTS="/path/dino_deitsmall8_pretrain.pth"`.
"""),
        ("parameters", """
SMOKE = False               # smoke profile: 32 train images, an 8-image crop bank, 4 epochs, 16 val images (CI)
INTERACTIVE = False         # (no widgets in this notebook)
SEED = 0                    # the decoder's initialisation and the batches
OUT_DIR = "artifacts/notebooks/12_transfgu"
CONFIG = None               # None or "world": configs/transfgu_world.yaml; "voc", "cocostuff27"; or a YAML path
DATASET = "world"           # world | voc | cocostuff27 (set CONFIG to match)
DATA_ROOT = None            # None: the embedded world (generated when absent)
LABELS = "full"             # world only: full (8 things + 5 stuff) | coarse (1 + 2) | voc (8 things + background)
BACKBONE = "embedded"       # "embedded" or a timm name such as "vit_small_patch8_224.dino"
WEIGHTS = None              # backbone weights file; None: the shipped file (embedded) or the hub (timm names)
RANDOM_INIT = False         # the backbone at random init (a baseline, labelled RANDOM INIT everywhere)
VARIANT = "official"        # official (released code) | paper (the equations)
RUN_DIR = None              # training run folder; None: OUT_DIR/run. Rerunning resumes it
CACHE_ROOT = None           # stored stages and features; None: artifacts/feature_cache in the checkout
OVERRIDES = {}              # any other config key, e.g. {"epochs": 12, "bank_limit": 400}
VAL_LIMIT = None            # score the first N val images; None: all (smoke 16)
N_SHOW = 4                  # images in the figures
"""),
        ("code", """
from pathlib import Path

import pandas as pd
import torch
from IPython.display import Image, display

from nbseg import viz
from nbseg.io import atomic_write_json, atomic_write_text, save_figure
from nbseg.methods import get_method, workflow
from nbseg.methods.base import frozen_backbone
from nbseg.methods.transfgu import evaluation as E, figures as F
from nbseg.methods.transfgu.data import open_split
from nbseg.methods.transfgu.paper import PAPER_SOURCE, PAPER_TABLE_1, PAPER_TABLE_5_VOC
from nbseg.notebook_tools import require_types

require_types(globals(), SMOKE=bool, INTERACTIVE=bool, SEED=int, OUT_DIR=str, CONFIG=(str, type(None)), DATASET=str,
              DATA_ROOT=(str, type(None)), LABELS=str, BACKBONE=str, WEIGHTS=(str, type(None)), RANDOM_INIT=bool,
              VARIANT=str, RUN_DIR=(str, type(None)), CACHE_ROOT=(str, type(None)), OVERRIDES=dict,
              VAL_LIMIT=(int, type(None)), N_SHOW=int)
torch.manual_seed(SEED)
out = Path(OUT_DIR); out.mkdir(parents=True, exist_ok=True)
spec = get_method("transfgu")
settings = {"backbone": BACKBONE, "weights": WEIGHTS, "random_init": RANDOM_INIT, "data": DATASET,
            "data_root": DATA_ROOT, "labels": LABELS, "cache_root": CACHE_ROOT, "seed": SEED, "variant": VARIANT,
            **OVERRIDES}
cfg = workflow.load_method_config(spec, CONFIG, {**(spec.smoke if SMOKE else {}), **settings})
val_limit = E.SMOKE_VAL_LIMIT if SMOKE and VAL_LIMIT is None else VAL_LIMIT
backbone = frozen_backbone(cfg)
print(f"TransFGU ({cfg.variant}): K={cfg.n_classes} on {cfg.data}/{cfg.split} at {cfg.image_size} px, "
      f"{cfg.epochs} epochs, teacher refreshed at epochs {cfg.refresh_epochs()}; {backbone.describe()}")
"""),
        ("md", """
## Crops and their concepts

Sliding windows (side `s * min(H, W)`, stride half the side), foreground = head-mean CLS attention above its mean; a
crop is foreground above 50 % foreground, background above 80 % background. Each row: crops of one concept. Purity and
NMI compare each crop's concept with the class covering most of it.
"""),
        ("code", """
prepared = E.prepare(cfg, backbone)
quality = E.concept_quality(cfg, prepared)
print(f"{prepared.concepts.k} concepts from {quality['n_crops']} crops: purity {quality['purity']:.3f}, "
      f"NMI {quality['nmi']:.3f}")
fig = F.crop_concepts_figure(prepared.bank, prepared.concepts, open_split(cfg), per_concept=6,
                             title=f"crops per concept ({backbone.describe()}, {cfg.data}/{cfg.split})")
save_figure(fig, out / "crop_concepts.png"); display(fig)
"""),
        ("md", "## Grad-CAM maps beside the attention (Eq. 7; each image's three strongest concepts)"),
        ("code", """
images, attn, maps = E.gradcam_examples(cfg, backbone, prepared.concepts, n=N_SHOW)
fig = F.gradcam_figure(images, attn, maps, title=f"Grad-CAM ({cfg.variant}) and CLS attention, "
                                                 f"{backbone.describe()}")
save_figure(fig, out / "gradcam.png"); display(fig)
"""),
        ("md", "## Train the student through bootstrapping rounds (resumable), scored at every epoch end"),
        ("code", """
run_dir = Path(RUN_DIR or out / "run")
model, summary = workflow.train_method(spec, cfg, run_dir, backbone=backbone,
                                       epoch_scores=E.epoch_evaluator(cfg, backbone, limit=val_limit))
curve = pd.read_csv(run_dir / "metrics.csv") if (run_dir / "metrics.csv").is_file() else None
print(f"{summary['steps']}/{summary['total_steps']} steps, round {int(model.round) + 1} of "
      f"{len(cfg.refresh_epochs()) + 1}, final loss {summary['loss']:.4f}")
if curve is not None:
    fig = F.rounds_figure(curve, cfg.refresh_epochs(), title=f"student val mIoU per epoch ({cfg.variant}), "
                                                             f"{backbone.describe()}")
    save_figure(fig, out / "rounds.png"); display(fig)
"""),
        ("md", "## Pseudo labels and the student against the ground truth (dataset-level Hungarian)"),
        ("code", """
ev = E.evaluate_transfgu(model, limit=val_limit)
atomic_write_text(out / "evaluation.csv", ev.table.to_csv(index=False))
for path in F.evaluation_figures(ev, out, max_rows=N_SHOW):
    display(Image(filename=str(path)))
print(ev.report())
"""),
        ("md", """
## Tables 1, 3 and 5 beside the paper's numbers

The paper's rows are **as reported** (DINO ViT-S/8 on COCO-Stuff / VOC); this run's row names its backbone, dataset
and variant. Table 5's loss ablation on this data: `nbseg ablate transfgu OUT_DIR`.
"""),
        ("code", """
table_3 = E.table_3(ev, curve, cfg)
atomic_write_text(out / "table_3.csv", table_3.to_csv(index=False))
table_1 = pd.DataFrame([{"source": PAPER_SOURCE, "dataset": k, "miou %": v[0], "acc %": v[1]}
                        for k, v in PAPER_TABLE_1.items()])
table_5 = pd.DataFrame([{"source": PAPER_SOURCE, "dataset": "Pascal-VOC", "losses": k, "miou %": v}
                        for k, v in PAPER_TABLE_5_VOC.items()])
display(table_1, table_5)
table_3.round(2)
"""),
        ("code", """
metrics = {**ev.metrics(), **{f"concepts/{k}": v for k, v in quality.items()}, "smoke": SMOKE,
           "config": str(spec.config_file(CONFIG)), "overrides": OVERRIDES, "run_dir": str(run_dir),
           "steps": summary["steps"], "total_steps": summary["total_steps"], "finished": summary["finished"],
           "final_loss": summary["loss"], "rounds": len(cfg.refresh_epochs()) + 1,
           "table3/trained/miou": table_3["trained"].iloc[0] / 100 if pd.notna(table_3["trained"].iloc[0]) else None,
           "paper/source": PAPER_SOURCE, "paper/table3/COCO-S-27/bootstrapped_percent": 16.19}
atomic_write_json(out / "metrics.json", metrics)
print(f"wrote {out / 'metrics.json'}")
"""),
    ]


def main() -> Path:
    return write_notebook(STEM, cells())


if __name__ == "__main__":
    main()
