"""PGSeg's figures (drawn with :mod:`nbseg.viz`) and the prompt widget of notebook ``13_pgseg``.

* :func:`group_maps` / :func:`stage_figure` - each stage's group assignment per patch (argmax of the soft map; the
  stage-2 map is ``A_1 A_2``), the I-NPR prototypes EM found in the stage-1 input (argmax responsibility), the
  zero-shot segmentation and the ground truth.
* :func:`zero_shot_figure` - zero-shot segmentations for a prompt list.
* :func:`prompt_state` / :func:`prompt_explorer` - a text box of class names and an image slider redrawing the
  zero-shot segmentation (ipywidgets; ``.state`` holds what is shown, testable without a browser).
* :func:`table4_figure` - Table 4 (ours, mean +- std over seeds) beside the paper's rows, labelled.

Every title names the encoder (a from-scratch GroupViT) and the dataset.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from nbseg import viz
from nbseg.methods.pgseg.losses import em_prototypes
from nbseg.methods.pgseg.zeroshot import final_assignment, labels_with_background, pixel_groups
from nbseg.widgets import redraw_on_change, show_figure


@torch.no_grad()
def group_maps(model, images: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """(B, H, W) id maps of images (B, 3, H, W): ``"stage 1 groups"``, ``"stage 2 groups"``, ``"EM prototypes
    (stage 1 input)"`` (the argmax responsibility of I-NPR's EM, also for a model trained without I-NPR, from
    random prototypes) and ``"zero-shot"`` (class ids of ``names``)."""
    model.eval()
    images = images.to(model.device, torch.float32)
    out = model.image_encoder.forward_features(images)
    size = tuple(images.shape[-2:])
    s1, s2 = out.stages[0].grouped.soft, out.stages[1].grouped.soft
    stage1 = model.image_encoder.stages[0]
    mu0 = stage1.prototypes if stage1.inpr else \
        F.normalize(torch.randn(s1.shape[1], out.patch_tokens.shape[-1], generator=torch.Generator().manual_seed(0)),
                    dim=-1).to(images.device)
    _, resp = em_prototypes(out.patch_tokens, mu0, model.cfg.em_iters)
    groups, affinity = model.groups_for(out, names, None, size)
    return {"stage 1 groups": pixel_groups(s1, out.grid, size).cpu(),
            "stage 2 groups (A1 A2)": pixel_groups(final_assignment(s1, s2), out.grid, size).cpu(),
            "EM prototypes (stage 1 input)": pixel_groups(resp.transpose(1, 2), out.grid, size).cpu(),
            "zero-shot": labels_with_background(groups, affinity, None).cpu()}


def _title(model, dataset: str) -> str:
    return f"PGSeg ({model.cfg.variant}) · {model.image_encoder.describe()} · {dataset}"


def stage_figure(model, images: torch.Tensor, labels, names: list[str], *, dataset: str = "world/val"):
    """One row per image: stage-1 and stage-2 groups, EM prototypes, zero-shot classes, ground truth (group and
    prototype colours are ids, meaningless across images; class colours follow ``names``)."""
    maps = group_maps(model, images, names)
    return viz.segmentation_grid(images, {**maps, "ground truth": list(labels)}, class_names=names,
                                 title=f"groups per stage, EM prototypes, zero-shot · {_title(model, dataset)}")


def zero_shot_figure(model, images: torch.Tensor, names: list[str], *, dataset: str = "world/val"):
    """Zero-shot segmentations of ``images`` for the class ``names`` (no background)."""
    preds = labels_with_background(*model.zero_shot(images, names), None)
    return viz.segmentation_grid(images, {f"prompts: {', '.join(names)}": preds}, class_names=names,
                                 title=f"zero-shot by name · {_title(model, dataset)}")


def prompt_state(model, images: torch.Tensor, index: int, prompts: str) -> dict:
    """What the prompt explorer shows: the parsed class names, the image index and the predicted map."""
    names = [n.strip() for n in prompts.split(",") if n.strip()] or model.class_names()
    pred = labels_with_background(*model.zero_shot(images[index:index + 1], names), None)[0]
    return {"index": index, "names": names, "prediction": pred,
            "present": [names[i] for i in sorted(set(pred.unique().tolist()))]}


def prompt_explorer(model, images: torch.Tensor, prompts: str = "ball, box, kite, star, sky, grass"):
    """A text box of comma-separated class names and an image slider; redraws the zero-shot segmentation.
    Returns an ``ipywidgets.VBox`` whose ``.state`` (:func:`prompt_state`) follows the controls."""
    import ipywidgets as W

    text = W.Text(value=prompts, description="prompts", continuous_update=False)
    image = W.IntSlider(value=0, min=0, max=len(images) - 1, description="image")
    out = W.Output()
    box = W.VBox([text, image, out])

    def redraw():
        box.state = s = prompt_state(model, images, image.value, text.value)
        show_figure(out, viz.segmentation_grid(images[s["index"]:s["index"] + 1], {"zero-shot": [s["prediction"]]},
                                               class_names=s["names"], title=_title(model, "world")))

    redraw_on_change(box, (text, image), redraw)
    redraw()
    return box


def table4_figure(summary, column: str = "full mIoU %"):
    """Bars of Table 4: our mean +- std over seeds per ablation (``summary`` of
    :func:`nbseg.methods.pgseg.claims.summarise`) beside the paper's rows (VOC, labelled as the paper's)."""
    import matplotlib.pyplot as plt

    names = list(summary["ablation"])
    x = np.arange(len(names))
    paper_col = [c for c in summary.columns if c.startswith("paper")][0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    axes[0].bar(x, summary[f"{column} mean"], yerr=summary[f"{column} std"].fillna(0), capsize=4)
    axes[0].set_title(f"ours: {column} (world, from-scratch GroupViT)")
    axes[1].bar(x, summary[paper_col].astype(float), color="grey")
    axes[1].set_title("the paper's Table 4 (VOC, ViT-S/16; derived rows)")
    for ax in axes:
        ax.set_xticks(x, names, rotation=20, fontsize=8)
    fig.tight_layout()
    return fig


__all__ = ["group_maps", "stage_figure", "zero_shot_figure", "prompt_state", "prompt_explorer", "table4_figure"]
