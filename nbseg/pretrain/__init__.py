"""DINO self-supervised pretraining (``nbseg pretrain``): :mod:`.dino` the method, :mod:`.train` the run (built by
:mod:`.build`, stepped by :mod:`.step`), :mod:`.objectives` the optional objectives beside DINO."""
from nbseg.pretrain.config import PretrainConfig
from nbseg.pretrain.export import export_teacher
from nbseg.pretrain.train import pretrain

__all__ = ["PretrainConfig", "pretrain", "export_teacher"]
