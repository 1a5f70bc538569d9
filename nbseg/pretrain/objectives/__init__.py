"""Optional objectives of ``nbseg pretrain`` beside DINO as published, each off by default and selected by its
config knob (:func:`nbseg.pretrain.config.uses_objectives` says whether any is on):

* :mod:`.ibot` - iBOT's masked patch self-distillation (``patch_loss_weight``; Zhou et al. 2022);
* :mod:`.dense` - patch distillation across the global views at corresponding points (``cross_view_loss_weight``,
  nbseg's variant) and dense InfoNCE on those pairs (``dense_contrastive_weight``; DenseCL / MoCo v3);
* :mod:`.targets` - Sinkhorn-Knopp teacher targets (``teacher_targets=sinkhorn``; SwAV / DINOv2);
* :mod:`.mae` - masked autoencoding (``mae_loss_weight``; He et al. 2022), alone or beside DINO;
* :mod:`.network` - the student / teacher with patch outputs, iBOT's mask token and MAE's decoder;
* :mod:`.step` - the step's losses with any of these on.

Recoloured teacher views (``teacher_recolour``) and colour look-up tables (``colour_lut_p``) change the views
(:mod:`nbseg.pretrain.batched_augment`), not the loss. Why these exist: on the embedded world DINO's patch tokens
learned instance colour first (the world's colours carry no class); they are experiments, not papers' recipes
for DINO.
"""
