"""Probes: what frozen ViT features know, measured the same way for every backbone (AlignSeg Sec. III, DCN Sec. 1).

* :mod:`nbseg.probes.basics` - the datasets and backbones a probe opens, saliency IoU, patch labels, 2-D embeddings,
  the k-means benchmark and the linear probe (re-exported here, with :class:`~nbseg.features.FeatureSet` and
  :func:`~nbseg.features.extract_dataset` from :mod:`nbseg.features` and :func:`~nbseg.cluster.kmeans_segmentation`).
* :mod:`nbseg.probes.attention` - attention-threshold sweeps (AlignSeg Sec. III-A).
* :mod:`nbseg.probes.prototypes` - prototypes from attention-masked patches (AlignSeg Figs. 2-3, Table IV).
"""
from nbseg.cluster import kmeans_segmentation
from nbseg.features.extract import FeatureSet, extract_dataset
from nbseg.probes.basics import (KMeansBenchmark, LinearProbeResult, embed_2d, embedding_panels, foreground_masks,
                                 kmeans_benchmark, linear_probe, open_dataset, patch_class_shares, patch_labels,
                                 probe_backbones, sample_patch_points, saliency_iou)
from nbseg.saliency import upsample_mask          # the notebooks upsample masks through probes (kept from probes.py)

__all__ = ["FeatureSet", "extract_dataset", "kmeans_segmentation", "open_dataset", "probe_backbones",
           "foreground_masks", "saliency_iou", "patch_class_shares", "patch_labels", "sample_patch_points",
           "embed_2d", "embedding_panels", "LinearProbeResult", "linear_probe", "KMeansBenchmark",
           "kmeans_benchmark", "upsample_mask"]
