"""Segmentation methods, one module per method. Each method is an ``nn.Module`` holding its frozen backbone as
``backbone`` (``frozen_prefixes = ("backbone.",)``), with ``training_step(batch, step) -> dict``,
``predict(images) -> (B, H, W)`` labels and ``provenance() -> dict``.

* :mod:`nbseg.methods.alignseg` - AlignSeg (Liu et al., TPAMI 2024); its pure losses are in
  :mod:`nbseg.methods.alignseg_losses`, its workflows in ``alignseg_eval`` / ``alignseg_figures`` /
  ``alignseg_segment`` / ``alignseg_batch``.
* :mod:`nbseg.methods.cli` - ``nbseg train``, ``nbseg evaluate``, ``nbseg segment``, ``nbseg ablate``.
"""
