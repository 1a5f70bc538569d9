"""The method contract: a toy method (random prototypes, a few lines) added through the registry trains, evaluates
and segments with the generic commands, as ARCHITECTURE.md's checklist says; DCN checkpoints evaluate and segment;
``nbseg ablate dcn`` runs DCN's own ablations; unknown names are clear errors."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from nbseg.cli import main as nbseg_main
from nbseg.data import load_dataset
from nbseg.errors import ConfigError
from nbseg.evaluation import evaluate
from nbseg.methods import MethodSpec, SegmentationModel, get_method, method_names, register, unregister
from nbseg.methods.base import frozen_backbone
from nbseg.methods.workflow import ablation_names
from nbseg.prototype_scores import prototype_cosine_maps, segment_by_argmax
from nbseg.runs import backbone_facts
from nbseg.train import TrainConfig


# ----------------------------------------------------------------------------------------------------------
# A toy method: K random prototypes on the frozen tokens, pulled towards the tokens they win
# ----------------------------------------------------------------------------------------------------------

@dataclass
class ToyProtoConfig(TrainConfig):
    backbone: str = "embedded"
    weights: str | None = None
    random_init: bool = True
    n_prototypes: int = 3
    n_images: int = 8
    epochs: int = 1
    batch_size: int = 4
    device: str = "cpu"


class ToyProto(nn.Module):
    frozen_prefixes = ("backbone.",)

    def __init__(self, cfg: ToyProtoConfig, backbone=None, device="cpu"):
        super().__init__()
        self.cfg, self.backbone = cfg, frozen_backbone(cfg, backbone, device)
        self.prototypes = nn.Parameter(torch.randn(cfg.n_prototypes, self.backbone.dim))

    def scores_from_features(self, patches):
        return prototype_cosine_maps(patches, self.prototypes)

    def training_step(self, batch, step=0):
        with torch.no_grad():
            patches = self.backbone.extract(batch["image"]).patches.clone()
        return {"loss": -self.scores_from_features(patches).amax(1).mean()}

    @torch.no_grad()
    def predict(self, images):
        scores = self.scores_from_features(self.backbone.extract(images).patches)
        return segment_by_argmax(scores, tuple(images.shape[-2:]))

    def provenance(self):
        return {"method": "toyproto", **backbone_facts(self.backbone)}


class FirstImages(torch.utils.data.Dataset):
    def __init__(self, dataset, n):
        self.dataset, self.n = dataset, n

    def __len__(self):
        return self.n

    def __getitem__(self, item):
        return {"image": self.dataset[item[0]].image}


@dataclass
class ToyEvaluation:
    table: pd.DataFrame

    def metrics(self):
        return {"toy/hungarian/miou": float(self.table["miou"].iloc[0])}

    def report(self):
        return self.table.to_string(index=False)


def toy_evaluate(model, *, split=None, limit=None, kmeans=True, progress=True):
    data = load_dataset("world", None, split or "val")
    samples = [data[i] for i in range(limit or 4)]
    preds = model.predict(torch.stack([s.image for s in samples]))
    r = evaluate(list(preds), [s.label for s in samples], model.cfg.n_prototypes, data.num_classes)
    return ToyEvaluation(pd.DataFrame([{"method": "toy", "miou": r.miou, "n_images": r.n_images}]))


@pytest.fixture
def toy_spec(tmp_path):
    config = tmp_path / "toy_world.yaml"
    config.write_text("n_prototypes: 3\n")
    spec = register(MethodSpec(
        name="toyproto", title="Toy prototypes", config_class=ToyProtoConfig, model_class=ToyProto,
        configs={"world": config},
        training_dataset=lambda cfg, model, progress=True: FirstImages(load_dataset("world", None, "train"),
                                                                        cfg.n_images),
        evaluate=toy_evaluate))
    yield spec
    unregister("toyproto")


def test_a_toy_method_trains_evaluates_and_segments_through_the_registry(toy_spec, tmp_path, capsys):
    assert "toyproto" in method_names() and get_method("toyproto") is toy_spec
    run = tmp_path / "run"
    assert nbseg_main(["train", "toyproto", str(run), "n_prototypes=4", "--eval-limit", "3", "--no-progress"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["steps"] == 2 and m["finished"] and 0 <= m["toy/hungarian/miou"] <= 1
    assert (run / "evaluation.csv").is_file() and "Toy" not in capsys.readouterr().err
    assert nbseg_main(["evaluate", str(run), "--limit", "2", "--json", str(tmp_path / "ev.json")]) == 0
    assert json.loads((tmp_path / "ev.json").read_text())["step"] == 2
    assert isinstance(get_method("toyproto").model_class(ToyProtoConfig()), SegmentationModel)
    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(image)
    assert nbseg_main(["segment", "--checkpoint", str(run), str(image), "--out", str(tmp_path / "seg")]) == 0
    with Image.open(tmp_path / "seg" / "img.png") as label:
        assert label.size == (56, 40) and np.asarray(label).max() < 4


def test_unknown_method_and_unregistered_kind_are_clear_errors(toy_spec, tmp_path, capsys):
    assert nbseg_main(["train", "nope", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'nope'" in err and "alignseg, dcn" in err and "toyproto" in err
    with pytest.raises(ConfigError, match="registered methods: alignseg, dcn"):
        get_method("nope")
    with pytest.raises(ConfigError, match="already registered"):
        register(MethodSpec(name="toyproto", title="again", config_class=ToyProtoConfig, model_class=ToyProto,
                            configs={}, training_dataset=None, evaluate=None))


# ----------------------------------------------------------------------------------------------------------
# DCN through the generic commands
# ----------------------------------------------------------------------------------------------------------

DCN_TINY = ["random_init=true", "input_size=48", "region_size=32", "n_stages=1", "n_fg_classes=2", "batch_size=8",
            "cache_limit=16", "max_steps=2", "epochs=1", "device=cpu"]


def test_dcn_checkpoint_evaluates_and_segments(tmp_path, capsys):
    run = tmp_path / "dcn"
    assert nbseg_main(["train", "dcn", str(run), *DCN_TINY, f"cache_root={tmp_path / 'cache'}", "--no-eval",
                       "--no-progress"]) == 0
    assert nbseg_main(["evaluate", str(run), "--limit", "6", "--no-progress", "--json",
                       str(tmp_path / "ev.json"), "--figures", str(tmp_path / "figs")]) == 0
    out = capsys.readouterr().out
    assert "DCN (Li et al. 2022), step 2" in out and "paper (Li et al. 2022), as reported" in out
    assert (tmp_path / "figs" / "region_grid.png").stat().st_size > 10_000
    m = json.loads((tmp_path / "ev.json").read_text())
    assert m["method"] == "DCN" and m["n_images"] == 6 and 0 <= m["table1/miou_mean"] <= 1
    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(image)
    assert nbseg_main(["segment", "--checkpoint", str(run), str(image), "--out", str(tmp_path / "seg"),
                       "--no-progress"]) == 0
    with Image.open(tmp_path / "seg" / "img.png") as label:
        assert label.size == (70, 50) and np.asarray(label).max() < 5


def test_dcn_ablations_run_its_own_settings(tmp_path, capsys):
    spec = get_method("dcn")
    assert {"k=3", "k=10", "foreground=all", "foreground=mean-head"} <= set(spec.ablations)
    code = nbseg_main(["ablate", "dcn", str(tmp_path), *DCN_TINY, f"cache_root={tmp_path / 'cache'}",
                       "--only", "k=3", "foreground=all", "seed=1", "--eval-limit", "8", "--no-progress"])
    assert code == 0, capsys.readouterr()
    # seed=1 after --only is an override of every run, not an ablation name
    assert "seed: 1" in next((tmp_path / "k=3").rglob("config.yaml")).read_text().splitlines()
    table = pd.read_csv(tmp_path / "ablations.csv")
    assert table["ablation"].tolist() == ["k=3", "foreground=all"] and (table["status"] == "ok").all()
    assert table["k"].tolist() == [3, 5] and table["foreground"].tolist() == ["min-head", "all"]
    assert table.loc[1, "foreground fraction"] == 1.0                       # no detection: every region foreground
    assert table["DCN + k-means mIoU %"].between(0, 100).all()


def test_only_words_split_into_ablation_names_and_overrides():
    from nbseg.methods.cli import split_only_words
    spec = get_method("alignseg")
    names, overrides = split_only_words(spec, ["baseline", "K=5", "beta=0.3", "seed=2", "n_prototypes=7", "K=7"])
    # names with "=" stay names; config-field keys become overrides; "K=7" is neither, so it stays a name that
    # ablation_names then reports as unknown
    assert names == ["baseline", "K=5", "beta=0.3", "K=7"] and overrides == ["seed=2", "n_prototypes=7"]
    with pytest.raises(ConfigError, match="unknown alignseg ablation"):
        ablation_names(spec, names)
