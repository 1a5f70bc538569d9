"""DINO self-supervised pretraining (``nbseg pretrain``)."""
from nbseg.pretrain.train import PretrainConfig, export_teacher, pretrain

__all__ = ["PretrainConfig", "pretrain", "export_teacher"]
