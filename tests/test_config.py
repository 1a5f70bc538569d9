"""Typed config: layering, coercion and the errors for unknown keys and bad values."""
from dataclasses import dataclass

import pytest

from nbseg.config import load_config, to_dict
from nbseg.errors import ConfigError


@dataclass
class Cfg:
    lr: float = 0.1
    epochs: int = 3
    name: str = "a"
    flag: bool = False
    scale: tuple[float, float] = (0.1, 0.5)
    limit: int | None = None


def test_layers_and_coercion(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("lr: 0.5\nepochs: 7\nscale: [0.2, 0.9]\n")
    cfg = load_config(Cfg, exp, ["epochs=9", "flag=true", "limit=none", "name=b"])
    assert (cfg.lr, cfg.epochs, cfg.flag, cfg.limit, cfg.name, cfg.scale) == (0.5, 9, True, None, "b", (0.2, 0.9))
    assert to_dict(cfg)["scale"] == [0.2, 0.9]
    assert load_config(Cfg, overrides=["limit=4"]).limit == 4


def test_unknown_keys_and_bad_values_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown key.*'lrr'"):
        load_config(Cfg, overrides=["lrr=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml.*epochz"):
        load_config(Cfg, bad)
    with pytest.raises(ConfigError, match="'epochs'.*integer"):
        load_config(Cfg, overrides=["epochs=2.5"])
    with pytest.raises(ConfigError, match="'flag'"):
        load_config(Cfg, overrides=["flag=maybe"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Cfg, overrides=["epochs"])
