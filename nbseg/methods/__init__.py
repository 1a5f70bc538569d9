"""Segmentation methods: one folder per method, one contract, one registry.

* :mod:`nbseg.methods.base` - the contract (the model protocol, :class:`MethodSpec`) and the registry
  (:func:`register`, :func:`get_method`, :func:`method_names`, :func:`method_for_kind`).
* :mod:`nbseg.methods.workflow` - config / train / load / run / ablate, written once for every method;
  :mod:`nbseg.methods.segment` - label PNGs and overlays of a user's images with any trained model.
* :mod:`nbseg.methods.cli` - ``nbseg train|evaluate|segment|ablate METHOD``, resolved through the registry.
* :mod:`nbseg.methods.alignseg` - AlignSeg (Liu et al., TPAMI 2024); :mod:`nbseg.methods.dcn` - DCN (Li et al. 2022).

A method imports the shared layers (backbones, data, features, evaluation, probes, training loop) and never
another method. Adding one: ARCHITECTURE.md.
"""
from nbseg.methods.base import (Ablation, MethodSpec, PaperNumbers, SegmentationModel, get_method, method_for_kind,
                                method_names, register, unregister)

__all__ = ["Ablation", "MethodSpec", "PaperNumbers", "SegmentationModel", "register", "unregister", "get_method",
           "method_names", "method_for_kind"]
