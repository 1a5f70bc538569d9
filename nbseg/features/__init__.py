"""Frozen backbone features of a dataset, computed once and reused.

* :mod:`nbseg.features.extract` - :func:`extract_dataset` into an in-memory :class:`FeatureSet` (probes, evaluation).
* :mod:`nbseg.features.cache` - the on-disk fp16 feature cache (:func:`build_feature_cache`), keyed by backbone,
  weights sha256, dataset and input size; resumable; a ``Dataset`` of cached tokens for training heads.
"""
from nbseg.features.cache import CachedFeatureDataset, FeatureCache, build_feature_cache
from nbseg.features.extract import FeatureSet, extract_dataset

__all__ = ["FeatureSet", "extract_dataset", "FeatureCache", "CachedFeatureDataset", "build_feature_cache"]
