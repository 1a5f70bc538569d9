"""Write the numbered notebooks from their cell sources (kept here so notebooks stay thin and reviewable).

    python tools/make_notebooks.py        # rewrites notebooks/*.ipynb without outputs
"""
import os
from pathlib import Path

import nbformat

# Where the notebooks are written: notebooks/ (NBSEG_NOTEBOOKS_OUT elsewhere: tests/test_notebook_sources.py writes
# them to a temporary folder and compares them with the committed ones).
NOTEBOOKS = Path(os.environ.get("NBSEG_NOTEBOOKS_OUT") or Path(__file__).resolve().parents[1] / "notebooks")


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


def write_notebook(stem: str, cells) -> Path:
    """Write ``NOTEBOOKS/<stem>.ipynb`` from ``cells`` (what every ``tools/notebooks_<method>.py`` does)."""
    NOTEBOOKS.mkdir(exist_ok=True)
    path = NOTEBOOKS / f"{stem}.ipynb"
    nbformat.write(notebook(cells), path)
    print("wrote", path)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Probing notebooks 01-05 (issue #4). They share the parameters every probe takes and one setup cell: the dataset,
# the backbone asked for and, beside it, the same architecture at random init; each role's features; and the
# start of metrics.json. Each notebook adds its own knobs (typed in the same require_types call).

REAL_DATA_HINT = """With real weights and data, e.g. DINO ViT-S/8 on PASCAL VOC: `BACKBONE="vit_small_patch8_224.dino"`,
`WEIGHTS="/path/dino_deitsmall8_pretrain.pth"`, `DATASET="voc"`, `DATA_ROOT="/path/VOC2012"`, `IMAGE_SIZE=320`.
The default backbone is nbseg's **embedded** ViT-Tiny/8, trained on the synthetic world *weakly supervised by its
captions, not DINO* (`BACKBONE="embedded-ssl"` is the self-supervised DINO one): its numbers are never a paper's
numbers. Every figure and table names the backbone, its weights and the dataset."""


def probe_parameters(stem: str, extra: str) -> str:
    return f'''
SMOKE = False               # smoke profile: a few images, for CI
INTERACTIVE = False         # show ipywidgets controls (off in headless runs)
SEED = 0
OUT_DIR = "artifacts/notebooks/{stem}"
DATASET = "world"           # world | voc | cocostuff27 | cityscapes27 | potsdam | potsdam3 | folder
DATA_ROOT = None            # None: the embedded world (generated when absent)
SPLIT = "val"
LABELS = "voc"              # world only: voc (things + background) | full | coarse
IMAGE_SIZE = None           # resize (short side) + centre crop for real data; None keeps the images' size
WORLD_SIZE = None           # world only: render the scenes at this size; None: 192 px for the default world (96 is
                            # the training render), a given DATA_ROOT's own size
BACKBONE = "embedded"       # "embedded" or a timm name such as "vit_small_patch8_224.dino"
WEIGHTS = None              # local weights file for a timm name (offline)
RANDOM_INIT = False         # measure only the architecture at random init (a baseline, labelled so everywhere)
COMPARE_RANDOM_INIT = True  # also measure the same architecture at random init beside the trained one
LIMIT = None                # images to use (all when None; smoke: 24)
N_SHOW = 6                  # images in the figures
{extra.strip()}
'''


QUICKSTART = [
    ("md", """
# 00 · Quickstart: what a frozen self-supervised ViT sees

Loads a backbone (default: nbseg's **embedded** ViT-Tiny/8, trained on the synthetic world *weakly supervised by its
captions, not DINO*; `BACKBONE="embedded-ssl"` is the self-supervised DINO one; never a paper's numbers), prints its
quality beside the same architecture at random initialisation, shows its CLS attention and saliency masks on val
images, segments them by **per-image** and
**dataset-level** k-means on patch tokens, and scores both with two protocols: dataset-level Hungarian matching and
AlignSeg's released per-image many-to-one precision protocol. Set `COMPARE_RANDOM_INIT` to put the same architecture
at random initialisation beside it. With real weights and data: `BACKBONE="vit_small_patch8_224.dino"`,
`WEIGHTS="/path/dino_deitsmall8_pretrain.pth"`, `DATASET="voc"`, `DATA_ROOT="/path/VOC2012"`, `IMAGE_SIZE=320`.
"""),
    ("parameters", probe_parameters("00_quickstart", """
K_PER_IMAGE = 5             # clusters per image (AlignSeg uses 5 prototypes)
K_DATASET = None            # clusters over the dataset (None: the number of classes)
SALIENCY_FRACTION = 0.6     # keep this fraction of the attention mass (DINO / AlignSeg use 0.6)
""")),
    ("code", """
from pathlib import Path

import pandas as pd
import torch

from nbseg import backbones, probes, viz
from nbseg.io import atomic_write_json, save_figure
from nbseg.notebook_tools import describe_run, require_types

require_types(globals(), SMOKE=bool, INTERACTIVE=bool, SEED=int, OUT_DIR=str, DATASET=str, SPLIT=str,
              LABELS=str, BACKBONE=str, RANDOM_INIT=bool, COMPARE_RANDOM_INIT=bool, K_PER_IMAGE=int,
              SALIENCY_FRACTION=float, N_SHOW=int, DATA_ROOT=(str, type(None)), WEIGHTS=(str, type(None)),
              IMAGE_SIZE=(int, type(None)), WORLD_SIZE=(int, type(None)), K_DATASET=(int, type(None)),
              LIMIT=(int, type(None)))
torch.manual_seed(SEED)
out = Path(OUT_DIR); out.mkdir(parents=True, exist_ok=True)
limit = 24 if SMOKE and LIMIT is None else LIMIT
dataset = probes.open_dataset(DATASET, DATA_ROOT, SPLIT, labels=LABELS, image_size=IMAGE_SIZE,
                              world_size=WORLD_SIZE)
backbone = backbones.load(BACKBONE, WEIGHTS, random_init=RANDOM_INIT)
feats = probes.extract_dataset(backbone, dataset, limit=limit)
print(describe_run(backbone, dataset, n_images=len(feats.ids)))
"""),
    ("md", """
## How good are these features? Quality beside random init and raw colour (world only)

Saliency: IoU of the 60%-mass CLS-attention mask with the objects; k-means: one clustering of all patch tokens,
Hungarian-matched to the 13 classes; linear probe: pixel accuracy of a logistic regression on frozen patch tokens.
A trained backbone should sit well above both baselines (the embedded model card has the full-split numbers).
"""),
    ("code", """
from nbseg.pretrain.quality import quality_table
if DATASET == "world" and not RANDOM_INIT:
    n_quality = 24 if SMOKE else 100
    quality = quality_table({"trained": backbone, "random init": backbones.load(BACKBONE, random_init=True,
                                                                                seed=SEED)},
                            root=DATA_ROOT, world_size=WORLD_SIZE, n_val=n_quality, n_train=16 if SMOKE else 200)
    quality.to_csv(out / "quality_table.csv", index=False)
    display(quality.set_index("features")[["saliency_iou_dino60", "kmeans_dataset_miou", "linear_probe_pixel_acc",
                                           "linear_probe_miou"]].round(3))
"""),
    ("md", """
## CLS attention of the last block, per head and head mean, with the keep-the-mass saliency mask

What to look for: with the trained backbone the head-mean attention lights up the objects (balls, kites, houses)
and the 60%-mass mask covers most of them (saliency IoU 0.59 against 0.28 at random init on the 192-px render), while
random init spreads its attention over the scene. It is not perfect: in some images part of the mass spills onto a
strongly textured stuff region (waves, a patterned wall), and single heads split the work between objects and stuff.
"""),
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
    ("md", """
## k-means on patch tokens: each image alone vs one clustering over the whole split

What to look for: with the trained backbone the dataset-level k-means segments follow the classes (one colour for
every grass region across images, another for every ball) and score about twice the random-init row under Hungarian
matching; per-image k-means follows object boundaries but is only a little above random init under the per-image
protocol, because within one image colour alone already separates most regions.
"""),
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

def probe_setup(types: str, imports: str = "") -> str:
    return f'''
from pathlib import Path

import pandas as pd
import torch

from nbseg import probes, viz
from nbseg.io import atomic_write_json, save_figure
from nbseg.notebook_tools import describe_run, require_types, table_metrics
{imports.strip()}

require_types(globals(), SMOKE=bool, INTERACTIVE=bool, SEED=int, OUT_DIR=str, DATASET=str, SPLIT=str, LABELS=str,
              BACKBONE=str, RANDOM_INIT=bool, COMPARE_RANDOM_INIT=bool, N_SHOW=int, DATA_ROOT=(str, type(None)),
              WEIGHTS=(str, type(None)), IMAGE_SIZE=(int, type(None)), WORLD_SIZE=(int, type(None)),
              LIMIT=(int, type(None)), {types.strip()})
torch.manual_seed(SEED)
out = Path(OUT_DIR); out.mkdir(parents=True, exist_ok=True)
limit = 24 if SMOKE and LIMIT is None else LIMIT
dataset = probes.open_dataset(DATASET, DATA_ROOT, SPLIT, labels=LABELS, image_size=IMAGE_SIZE,
                              world_size=WORLD_SIZE)
models = probes.probe_backbones(BACKBONE, WEIGHTS, random_init=RANDOM_INIT, compare_random_init=COMPARE_RANDOM_INIT,
                                seed=SEED)                  # {{"trained": ..., "random_init": ...}}
feats = {{role: probes.extract_dataset(bb, dataset, limit=limit) for role, bb in models.items()}}
C, names, show = dataset.num_classes, dataset.class_names, slice(0, N_SHOW)
everyone = " vs ".join(f"{{role}}: {{bb.describe()}}" for role, bb in models.items()) + f" · {{dataset.describe()}}"
metrics = {{"dataset": dataset.describe(), "n_images": len(feats[next(iter(feats))].ids), "smoke": SMOKE,
           **{{f"{{role}}/backbone": bb.describe() for role, bb in models.items()}}}}
for role, bb in models.items():
    print(f"{{role}}: {{describe_run(bb, dataset, n_images=metrics['n_images'])}}")
'''


WRITE_METRICS = '''
atomic_write_json(out / "metrics.json", metrics)   # tables: the CSV files in OUT_DIR
metrics
'''

ATTENTION = [
    ("md", f"""
# 01 · Attention thresholds (AlignSeg §III-A, DINO)

The last block's CLS attention of a frozen self-supervised ViT, per head and averaged over the heads, and DINO's
keep-the-mass masks (keep the highest patches that hold a fraction of the attention mass). AlignSeg picks that
fraction "by manually checking the best IoU ... adjusting the threshold by 5% each time": here the sweep is done
for every image, head and fraction against the ground-truth foreground, giving the best fraction per image (an
oracle) and the single best fraction over the dataset, for the trained backbone and for random init.

{REAL_DATA_HINT}
"""),
    ("parameters", probe_parameters("01_attention_thresholds", """
SALIENCY_FRACTION = 0.6     # attention mass kept in the static mask figures and the widget (DINO / AlignSeg: 0.6)
""")),
    ("code", probe_setup("SALIENCY_FRACTION=float", """
from nbseg.probes import attention as probes_attention
from nbseg.saliency import dino_saliency
""")),
    ("md", "## CLS attention per head and head mean, with each head's keep-the-mass mask"),
    ("code", """
for role, fs in feats.items():
    masks = dino_saliency(fs.attn[show], SALIENCY_FRACTION, head="each")
    fig = viz.attention_figure(fs.images[show], fs.attn[show], masks=masks,
                               title=f"CLS attention, {SALIENCY_FRACTION:.0%}-mass mask per head · {fs.title()}")
    save_figure(fig, out / f"attention_{role}.png"); display(fig)
"""),
    ("md", "## The 5%-step sweep: IoU with the foreground for every image, map and kept fraction"),
    ("code", """
sweeps = {}
for role, fs in feats.items():
    fg, valid = probes.foreground_masks(fs.labels)
    maps, map_names = probes_attention.head_maps(fs.attn)
    sweeps[role] = probes_attention.threshold_sweep(maps, fg, valid, map_names=map_names, image_ids=fs.ids)
summary = pd.concat([probes_attention.summarise_sweep(t).assign(role=r, backbone=feats[r].title())
                     for r, t in sweeps.items()], ignore_index=True)
summary.to_csv(out / "threshold_summary.csv", index=False)
summary
"""),
    ("code", """
for role, table in sweeps.items():
    curves = probes_attention.sweep_curves(table)
    curves.to_csv(out / f"iou_vs_threshold_{role}.csv")
    fig = viz.curve_figure(curves.index, dict(curves.items()), xlabel="kept fraction of the attention mass",
                           ylabel="mean IoU with the foreground", title=f"IoU vs threshold · {feats[role].title()}")
    save_figure(fig, out / f"iou_vs_threshold_{role}.png"); display(fig)
"""),
    ("code", """
best = pd.concat([probes_attention.best_per_image(t).assign(role=r) for r, t in sweeps.items()], ignore_index=True)
best.to_csv(out / "best_threshold_per_image.csv", index=False)
fig = viz.histogram_figure({feats[r].backbone: {m: best.loc[(best["role"] == r) & (best["map"] == m), "threshold"]
                                                for m in ("mean", "head 0")} for r in feats},
                           xlabel="best kept fraction of one image", bins=20, value_range=(0.025, 1.025),
                           title=f"best threshold per image (head mean, head 0) · {dataset.describe()}")
save_figure(fig, out / "best_threshold_per_image.png"); fig
"""),
    ("code", """
for role, fs in feats.items():
    t = summary.query("role == @role and map == 'mean'")["dataset_threshold"].item()
    fg, _ = probes.foreground_masks(fs.labels[show])
    fig = viz.mask_figure(fs.images[show], probes.upsample_mask(dino_saliency(fs.attn[show], t), fs.image_size),
                          gt_masks=fg, title=f"head-mean mask at the dataset's best fraction {t:.0%} · {fs.title()}")
    save_figure(fig, out / f"best_masks_{role}.png"); display(fig)
"""),
    ("code", """
if INTERACTIVE:   # image picker, head selector, threshold slider
    from nbseg.widgets import saliency_explorer
    display(saliency_explorer(feats[next(iter(feats))]))
"""),
    ("code", """
for role, fs in feats.items():
    metrics.update(table_metrics(summary[summary["role"] == role], "map",
                                 ["dataset_threshold", "dataset_iou", "per_image_best_iou"], f"{role}/"))
    metrics[f"{role}/mean/iou_at_default_fraction"] = probes.saliency_iou(fs.attn, fs.labels,
                                                                         fraction=SALIENCY_FRACTION).mean().item()
""" + WRITE_METRICS),
]

CONSISTENCY = [
    ("md", f"""
# 02 · Semantic consistency between patches (AlignSeg §III-A, Fig. 2)

A *prototype* is the mean embedding of the patches that one image's thresholded CLS attention highlights. For each
class, the prototype of the image where the class covers most segments the same class in the other images by
thresholded cosine similarity (threshold from the 5%-step sweep). As the number of images grows the IoU drops:
embeddings of one class scatter across images, which AlignSeg calls "lethal for semantic categorization" and
which is why it segments per image. The embedding plot shows the scatter.

{REAL_DATA_HINT}
"""),
    ("parameters", probe_parameters("02_semantic_consistency", """
SIMILARITY_RULE = "mass"    # threshold similarity maps like the attention ("mass", AlignSeg) or by cosine ("value")
SALIENCY_FRACTION = 0.6     # attention mass whose patches make a prototype
MIN_SHARE = 0.01            # an image holds a class when it covers at least this share of its pixels
SHOW_CLASS = None           # the class drawn as Fig. 2 (None: the class held by most images)
EMBED_POINTS = 2000         # patches per panel of the embedding plot
""")),
    ("code", probe_setup("SIMILARITY_RULE=str, SALIENCY_FRACTION=float, MIN_SHARE=float, "
                         "SHOW_CLASS=(int, type(None)), EMBED_POINTS=int", """
from nbseg.probes.prototypes import consistency_view, semantic_consistency, thing_classes
from nbseg.saliency import dino_saliency
""")),
    ("md", "## Every class: the prototype of one image against the class in 1, 2, 4, ... and all images"),
    ("code", """
studies = {role: semantic_consistency(fs, C, thing_classes(names), rule=SIMILARITY_RULE, fraction=SALIENCY_FRACTION,
                                      min_share=MIN_SHARE) for role, fs in feats.items()}
curve = pd.concat([s.curve.assign(role=r, backbone=feats[r].title(), class_name=s.curve["class"].map(names.__getitem__))
                   for r, s in studies.items()], ignore_index=True)
curve.to_csv(out / "iou_vs_images.csv", index=False)
mean_curves = pd.concat({r: s.mean_curve() for r, s in studies.items()}, axis=1)
mean_curves
"""),
    ("code", """
fig = viz.curve_figure(mean_curves.index, {f"{r}: {c.replace('_', ' ')}": mean_curves[(r, c)] for r, c in mean_curves},
                       xlabel="number of images (the source first)", ylabel="mean IoU over classes",
                       title=f"one image's prototype vs its class in n images · {everyone}")
save_figure(fig, out / "iou_vs_images.png"); fig
"""),
    ("code", """
for role, s in studies.items():
    per_class = s.curve[s.curve["n_images"].isin(s.sizes)].pivot(index="n_images", columns="class", values="iou")
    fig = viz.curve_figure(per_class.index, {names[c]: per_class[c] for c in per_class}, xlabel="number of images",
                           ylabel="IoU (best shared threshold)", title=f"IoU per class · {feats[role].title()}")
    save_figure(fig, out / f"iou_per_class_{role}.png"); display(fig)
"""),
    ("md", "## Fig. 2 for one class: the source's attention mask, the thresholded similarity in other images, "
           "and the embedding space"),
    ("code", """
shown = SHOW_CLASS if SHOW_CLASS is not None else int(curve.groupby("class")["n_images"].max().idxmax())
views = {}
for role, fs in feats.items():
    source, row = studies[role].sources[shown], curve.query("role == @role and `class` == @shown and n_images == 1")
    views[role] = view = consistency_view(fs, source, shown, row["threshold"].item(), C, rule=SIMILARITY_RULE,
                            fraction=SALIENCY_FRACTION, min_share=MIN_SHARE, n_show=N_SHOW)
    display(viz.attention_figure(fs.images[[source]], fs.attn[[source]], heads=[],
                                 masks=dino_saliency(fs.attn[[source]], SALIENCY_FRACTION),
                                 title=f"source image {source} of {names[shown]} · {fs.title()}"))
    fig = viz.mask_figure(fs.images[view["shown"]], view["masks"], gt_masks=fs.labels[view["shown"]] == shown,
                          title=f"{names[shown]} prototype of image {source}, {SIMILARITY_RULE} threshold "
                                f"{view['threshold']:.2f} (best for the source) · {fs.title()}")
    save_figure(fig, out / f"similarity_masks_{role}.png"); display(fig)
"""),
    ("code", """
for role, fs in feats.items():
    targets = views[role]["targets"]
    sets = {"source image": targets[:1], "8 images": targets[:8], f"all {len(targets)} images": targets}
    panels = probes.embedding_panels(fs, sets, C, max_points=EMBED_POINTS, seed=SEED)
    fig = viz.embedding_scatter({k: (*v, names) for k, v in panels.items()},
                                title=f"patches of images holding {names[shown]} (PCA, by class) · {fs.title()}")
    save_figure(fig, out / f"embedding_{role}.png"); display(fig)
"""),
    ("code", """
if INTERACTIVE:   # source image, class and threshold
    from nbseg.widgets import consistency_explorer
    display(consistency_explorer(feats[next(iter(feats))], C, names, rule=SIMILARITY_RULE,
                                 fraction=SALIENCY_FRACTION, min_share=MIN_SHARE))
"""),
    ("code", """
for role, s in studies.items():
    metrics.update({f"{role}/{k}": v for k, v in s.summary().items()})
    metrics.update({f"{role}/iou_at_{n}_images": v for n, v in s.mean_curve()["iou"].items()})
""" + WRITE_METRICS),
]

QUALITY = [
    ("md", f"""
# 03 · Semantic quality across the image (AlignSeg §III-B, Fig. 3)

For each image holding two classes, two class prototypes come from two *other* images (the ones where each class
covers most), and a background prototype from the reversed attention mask of the first. The image is segmented by
argmax over the three: once as a whole (global view), and once crop by crop, each crop re-segmented at the full input
size (local view). AlignSeg observes that non-salient regions (small objects, edges) are segmented poorly and that
local crops segment finer: the table scores both views inside and outside the image's saliency mask. At the end,
AlignSeg's Table IV computed for hand-picked prototypes (the same function serves learnt ones).

{REAL_DATA_HINT}
"""),
    ("parameters", probe_parameters("03_semantic_quality", """
SALIENCY_FRACTION = 0.6     # attention mass: the prototypes' patches, the background (the rest), the salient region
MIN_SHARE = 0.02            # both classes of an image cover at least this share of it
TILES = 2                   # local view: TILES x TILES crops, each re-segmented at full input size
TABLE_TEMPERATURE = 0.1     # softmax temperature of the prototype-class similarity table (AlignSeg Table IV)
""")),
    ("code", probe_setup("SALIENCY_FRACTION=float, MIN_SHARE=float, TILES=int, TABLE_TEMPERATURE=float", """
from nbseg.probes.prototypes import own_class_top1, semantic_quality, source_prototype_table
from nbseg.saliency import dino_saliency
""")),
    ("md", "## Global vs local view, salient vs non-salient region"),
    ("code", """
studies = {role: semantic_quality(models[role], fs, C, names, fraction=SALIENCY_FRACTION, tiles=TILES,
                                  min_share=MIN_SHARE) for role, fs in feats.items()}
table = pd.concat([s.table.assign(role=r, backbone=feats[r].title()) for r, s in studies.items()], ignore_index=True)
table.to_csv(out / "quality_by_region.csv", index=False)
table
"""),
    ("code", """
grid = table.assign(row=table["role"] + " · " + table["view"]).pivot(index="row", columns="region", values="miou")
fig = viz.table_heatmap(grid[["all", "salient", "non-salient"]],
                        title=f"mIoU (background + 2 classes) by view and region · {everyone}")
save_figure(fig, out / "quality_by_region.png"); fig
"""),
    ("code", """
for role, s in studies.items():
    n = min(N_SHOW, len(s.cases))
    fig = viz.segmentation_grid(feats[role].images[[c.target for c in s.cases[:n]]], {
        "ground truth (bg + 2 classes)": s.gt[:n], "salient region": torch.where(s.salient[:n], s.gt[:n], 255),
        "global view": s.global_pred[:n], f"{TILES}x{TILES} crops, each at full size": s.local_pred[:n]},
        class_names=names, title=f"prototype argmax, global vs local view · {feats[role].title()}")
    save_figure(fig, out / f"segmentations_{role}.png"); display(fig)
"""),
    ("code", """
for role, s in studies.items():   # the three prototypes of the first image: where they come from
    case, fs = s.cases[0], feats[role]
    images = [case.background_source, *case.sources]
    masks = dino_saliency(fs.attn[images], SALIENCY_FRACTION); masks[0] = ~masks[0]
    fig = viz.mask_figure(fs.images[images], probes.upsample_mask(masks, fs.image_size), columns=3,
                          title=f"prototypes for image {case.target}: background (reversed mask), "
                                f"{names[case.classes[0]]}, {names[case.classes[1]]} · {fs.title()}")
    save_figure(fig, out / f"prototype_sources_{role}.png"); display(fig)
"""),
    ("md", "## AlignSeg Table IV, for hand-picked prototypes: similarity to each class's mean embedding (softmax)"),
    ("code", """
for role, fs in feats.items():
    similarity = source_prototype_table(fs, C, names, fraction=SALIENCY_FRACTION, temperature=TABLE_TEMPERATURE)
    similarity.to_csv(out / f"prototype_class_similarity_{role}.csv")
    metrics[f"{role}/table_iv_own_class_top1"] = own_class_top1(similarity)
    fig = viz.table_heatmap(similarity, title=f"attention prototype of each class's image vs class means "
                                              f"(softmax, T={TABLE_TEMPERATURE}) · {fs.title()}")
    save_figure(fig, out / f"prototype_class_similarity_{role}.png"); display(fig)
"""),
    ("code", """
if INTERACTIVE:   # target image, prototype classes and their source images, crop
    from nbseg.widgets import quality_explorer
    role = next(iter(feats))
    display(quality_explorer(models[role], feats[role], C, names, fraction=SALIENCY_FRACTION, min_share=MIN_SHARE))
"""),
    ("code", """
for role, s in studies.items():
    metrics.update({f"{role}/{k}": v for k, v in s.summary().items()})
""" + WRITE_METRICS),
]

ANGLES = [
    ("md", f"""
# 04 · Intra- and inter-class angles, per image vs over the dataset (DCN §1)

DCN measures how compact each class is (intra-class angle: mean angle between each pixel embedding and its class
centre) and how far apart the classes are (inter-class angle: for each class, the smallest angle between its centre
and another centre, averaged over classes), within single images and over all pixels of the dataset. Within an
image the classes are compact and far apart; over the dataset the centres crowd together, so clustering each image
on its own is easier. DCN's numbers (DINO ViT-S/8, VOC) are printed beside ours, labelled as the paper's.

{REAL_DATA_HINT}
"""),
    ("parameters", probe_parameters("04_class_angles", """
HIST_BINS = 36              # histogram bins over 0-180 degrees
""")),
    ("code", probe_setup("HIST_BINS=int", """
from nbseg import angles
""")),
    ("md", "## DCN's table: per image vs over the dataset"),
    ("code", """
studies = {role: angles.angle_study(fs.patches, fs.labels, C, progress=True) for role, fs in feats.items()}
table = angles.angle_table({feats[r].title(): s for r, s in studies.items()})
table.to_csv(out / "class_angles.csv", index=False)
pd.concat([s.per_image.assign(role=r) for r, s in studies.items()]).to_csv(out / "class_angles_per_image.csv",
                                                                          index=False)
table.pivot(index="source", columns="scope", values=["intra_deg", "inter_deg"]).round(2)
"""),
    ("code", """
for role, s in studies.items():
    d = s.dataset
    fig = viz.histogram_figure({
        "angle of each pixel to its class centre": {"within its image": (s.within_images, s.within_weights),
                                                   "over the dataset": (d.to_centre, d.weights)},
        "smallest angle between class centres": {"within each image": s.inter_within_images,
                                                 "over the dataset": d.inter_per_class}},
        xlabel="degrees", bins=HIST_BINS, value_range=(0, 180), title=f"class angles · {feats[role].title()}")
    save_figure(fig, out / f"class_angles_{role}.png"); display(fig)
"""),
    ("code", """
for role, s in studies.items():
    metrics.update({f"{role}/{k}": v for k, v in s.summary().items()})
metrics["paper_dcn/source"] = angles.DCN_REPORTED["source"]
metrics.update({f"paper_dcn/{scope.replace(' ', '_')}_{k}": v for scope in ("per image", "dataset")
                for k, v in angles.DCN_REPORTED[scope].items()})
""" + WRITE_METRICS),
]

CLUSTERING = [
    ("md", f"""
# 05 · t-SNE of patch embeddings; per-image vs dataset-level k-means (AlignSeg Figs. 7 and 9, DCN)

A t-SNE of patch embeddings coloured by ground truth and by dataset-level k-means cluster (AlignSeg Fig. 7), then
k-means on the patch tokens of each image alone vs one k-means over all patches of the split (AlignSeg Fig. 9;
DCN's argument for per-image clustering), scored with both protocols: dataset-level Hungarian matching, and
AlignSeg's per-image many-to-one precision protocol, which is far more lenient. Per-image cluster ids mean nothing
across images, so only the per-image protocol can score them fairly; label which protocol a number comes from.

{REAL_DATA_HINT}
"""),
    ("parameters", probe_parameters("05_tsne_and_clustering", """
K_PER_IMAGE = 5             # clusters per image (AlignSeg uses 5 prototypes)
K_DATASET = None            # clusters over the dataset (None: the number of classes)
K_SWEEP = [3, 5, 9]         # mIoU vs K, per-image and dataset k-means with the same K (smoke: the first two)
TSNE_POINTS = 2000          # patches in the t-SNE (smoke: 500)
""")),
    ("code", probe_setup("K_PER_IMAGE=int, K_DATASET=(int, type(None)), K_SWEEP=list, TSNE_POINTS=int")),
    ("md", "## t-SNE of patch embeddings, coloured by class and by dataset-level k-means cluster"),
    ("code", """
k_dataset = K_DATASET or C
for role, fs in feats.items():
    x, y, index = probes.sample_patch_points(fs, C, max_points=500 if SMOKE else TSNE_POINTS, seed=SEED)
    points = probes.embed_2d(x, "tsne", seed=SEED)
    clusters = probes.kmeans_segmentation(fs.patches, k_dataset, scope="dataset", seed=SEED).reshape(-1)[index]
    fig = viz.embedding_scatter({"ground-truth class": (points, y, names),
                                 f"dataset k-means cluster (K={k_dataset})": (points, clusters)},
                                title=f"t-SNE of {len(x)} patch embeddings · {fs.title()}")
    save_figure(fig, out / f"tsne_{role}.png"); display(fig)
"""),
    ("md", "## Per-image vs dataset-level k-means, under both protocols"),
    ("code", """
results = {role: probes.kmeans_benchmark(fs, dataset, k_per_image=K_PER_IMAGE, k_dataset=K_DATASET, seed=SEED)
           for role, fs in feats.items()}
table = pd.concat([r.table.assign(role=role) for role, r in results.items()], ignore_index=True)
table.to_csv(out / "kmeans_protocols.csv", index=False)
table
"""),
    ("code", """
for role, r in results.items():
    fs = feats[role]
    fig = viz.segmentation_grid(fs.images[show], {"ground truth": fs.labels[show],
                                                  f"per-image k-means (K={r.k_per_image})": r.per_image[show],
                                                  f"dataset k-means (K={r.k_dataset})": r.dataset[show]},
                                class_names=names, title=f"k-means segmentations · {fs.title()}")
    save_figure(fig, out / f"segmentations_{role}.png"); display(fig)
"""),
    ("code", """
ks = K_SWEEP[:2] if SMOKE else K_SWEEP
sweep = pd.concat([probes.kmeans_benchmark(fs, dataset, k_per_image=k, k_dataset=k, seed=SEED).table.assign(role=role)
                   for role, fs in feats.items() for k in ks], ignore_index=True)
sweep.to_csv(out / "miou_vs_k.csv", index=False)
for role in feats:
    by_k = sweep[sweep["role"] == role].pivot(index="K", columns=["method", "protocol"], values="miou")
    fig = viz.curve_figure(by_k.index, {f"{m}, {p} protocol": by_k[(m, p)] for m, p in by_k}, xlabel="K",
                           ylabel="mIoU", title=f"mIoU vs K · {feats[role].title()}")
    save_figure(fig, out / f"miou_vs_k_{role}.png"); display(fig)
"""),
    ("code", """
if INTERACTIVE:   # K slider and image picker
    from nbseg.widgets import kmeans_explorer
    display(kmeans_explorer(feats[next(iter(feats))], C, k=K_PER_IMAGE, seed=SEED))
"""),
    ("code", """
for role, r in results.items():
    metrics.update({f"{role}/{k}": v for k, v in r.flat().items()})
    metrics.update(table_metrics(sweep[sweep["role"] == role], ["K", "method", "protocol"], "miou", f"{role}/K="))
""" + WRITE_METRICS),
]

NOTEBOOK_CELLS = {
    "00_quickstart": QUICKSTART,
    "01_attention_thresholds": ATTENTION,
    "02_semantic_consistency": CONSISTENCY,
    "03_semantic_quality": QUALITY,
    "04_class_angles": ANGLES,
    "05_tsne_and_clustering": CLUSTERING,
}

if __name__ == "__main__":
    NOTEBOOKS.mkdir(exist_ok=True)
    for stem, cells in NOTEBOOK_CELLS.items():
        nbformat.write(notebook(cells), NOTEBOOKS / f"{stem}.ipynb")
        print("wrote", NOTEBOOKS / f"{stem}.ipynb")
    # The method notebooks keep their cells next to their method (tools/notebooks_<method>.py); write them too.
    import runpy

    for script in sorted(Path(__file__).parent.glob("notebooks_*.py")):
        runpy.run_path(str(script), run_name="__main__")
