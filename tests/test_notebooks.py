"""Every numbered notebook runs headless under the smoke profile, and its recorded numbers make sense."""
import json

import pytest

from nbseg.notebook_runner import check_notebook, find_notebooks, run_notebooks

pytestmark = pytest.mark.notebook


# Method notebooks train a model and have their own test module, which runs them once (not twice in CI).
OWN_TEST_MODULE = {"10_alignseg": "test_notebook_alignseg.py", "11_dcn": "test_notebook_dcn.py",
                   "12_transfgu": "test_notebook_transfgu.py", "13_pgseg": "test_notebook_pgseg.py",
                   "14_san": "test_notebook_san.py"}


def test_every_method_notebook_has_its_own_smoke_test():
    from pathlib import Path

    here = Path(__file__).parent
    for stem, module in OWN_TEST_MODULE.items():
        assert f'NOTEBOOK = "{stem}"' in (here / module).read_text(), (stem, module)
    unknown = [nb.stem for nb in find_notebooks() if nb.stem[0] != "0" and nb.stem not in OWN_TEST_MODULE]
    assert unknown == [], f"add {unknown} to the smoke run below or give it its own test module"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    out = tmp_path_factory.mktemp("notebooks")
    # listed once: the checks below judge the notebooks that ran
    notebooks = [nb for nb in find_notebooks() if nb.stem not in OWN_TEST_MODULE]
    metrics = run_notebooks(notebooks, profile="smoke", out_dir=out)
    return out, metrics, notebooks


def test_every_notebook_is_clean_and_ran(executed):
    out, metrics, notebooks = executed
    for nb in notebooks:
        assert check_notebook(nb) == [], nb
        assert (out / nb.stem / f"{nb.stem}.ipynb").exists()
        assert (out / nb.stem / "metrics.json").exists(), f"{nb.stem} wrote no metrics.json"
    assert set(metrics["notebook"]) == {nb.stem for nb in notebooks}


def test_quickstart_numbers(executed):
    out = executed[0]
    m = json.loads((out / "00_quickstart" / "metrics.json").read_text())
    assert m["smoke"] is True and m["n_images"] == 24
    assert "embedded" in m["backbone"] and "RANDOM" not in m["backbone"]
    assert "RANDOM INIT" in open(out / "00_quickstart" / "metrics_table.csv").read()
    for key, value in m.items():
        if key.endswith("miou") or key.endswith("pixel_acc") or key == "saliency_iou":
            assert 0.0 <= value <= 1.0, (key, value)
    # Per-image k-means ids mean nothing across images: matching them once over the dataset must score far below
    # matching each image on its own (the observation DCN and AlignSeg build on).
    assert m["per-image k-means/per-image/miou"] > m["per-image k-means/hungarian/miou"] + 0.2
    for fig in ("attention.png", "saliency.png", "segmentations.png"):
        assert (out / "00_quickstart" / fig).stat().st_size > 10_000


PROBES = ["01_attention_thresholds", "02_semantic_consistency", "03_semantic_quality", "04_class_angles",
          "05_tsne_and_clustering"]
# What each probe notebook leaves in OUT_DIR besides metrics.json (figures and tables for both backbones).
OUTPUTS = {
    "01_attention_thresholds": ["attention_trained.png", "iou_vs_threshold_random_init.png", "best_masks_trained.png",
                                "best_threshold_per_image.png", "threshold_summary.csv",
                                "iou_vs_threshold_trained.csv"],
    "02_semantic_consistency": ["iou_vs_images.png", "iou_per_class_trained.png", "similarity_masks_random_init.png",
                                "embedding_trained.png", "iou_vs_images.csv"],
    "03_semantic_quality": ["quality_by_region.png", "segmentations_trained.png", "prototype_sources_random_init.png",
                            "prototype_class_similarity_trained.png", "quality_by_region.csv"],
    "04_class_angles": ["class_angles_trained.png", "class_angles_random_init.png", "class_angles.csv",
                        "class_angles_per_image.csv"],
    "05_tsne_and_clustering": ["tsne_trained.png", "segmentations_random_init.png", "miou_vs_k_trained.png",
                               "kmeans_protocols.csv", "miou_vs_k.csv"],
}
ROLES = ("trained", "random_init")


def probe_metrics(out, stem):
    return json.loads((out / stem / "metrics.json").read_text())


@pytest.mark.parametrize("stem", PROBES)
def test_probe_notebook_provenance_and_outputs(executed, stem):
    out = executed[0]
    m = probe_metrics(out, stem)
    assert m["smoke"] is True and m["n_images"] == 24 and m["dataset"].startswith("world/val")
    assert "embedded" in m["trained/backbone"] and "RANDOM" not in m["trained/backbone"]
    assert "RANDOM INIT" in m["random_init/backbone"]
    for name in OUTPUTS[stem]:
        assert (out / stem / name).stat().st_size > (5_000 if name.endswith(".png") else 50), name
    for key, value in m.items():
        if key.split("/")[0] in ROLES and key != f"{key.split('/')[0]}/backbone":
            assert isinstance(value, (int, float)), (key, value)


def test_attention_threshold_numbers(executed):
    m = probe_metrics(executed[0], "01_attention_thresholds")
    for role in ROLES:
        for name in [f"head {h}" for h in range(6)] + ["mean"]:
            dataset_iou, oracle = m[f"{role}/{name}/dataset_iou"], m[f"{role}/{name}/per_image_best_iou"]
            assert 0.0 <= dataset_iou <= oracle <= 1.0           # one threshold for all cannot beat one per image
            assert round(m[f"{role}/{name}/dataset_threshold"] * 20) in range(1, 21)      # on the 5% grid
        # the sweep's best fraction is at least as good as the default 60%, which is on its grid
        assert m[f"{role}/mean/dataset_iou"] >= m[f"{role}/mean/iou_at_default_fraction"] - 1e-6


def test_semantic_consistency_numbers(executed):
    m = probe_metrics(executed[0], "02_semantic_consistency")
    for role in ROLES:
        shared, source = m[f"{role}/all_images_iou"], m[f"{role}/all_images_iou_source_threshold"]
        assert 0.0 <= source <= shared <= m[f"{role}/all_images_per_image_best_iou"] <= 1.0
        assert m[f"{role}/iou_at_1_images"] == m[f"{role}/source_image_iou"]
        assert 1 <= m[f"{role}/n_classes"] <= 8


def test_semantic_quality_numbers(executed):
    m = probe_metrics(executed[0], "03_semantic_quality")
    for role in ROLES:
        assert m[f"{role}/n_cases"] >= 1 and 0.0 <= m[f"{role}/table_iv_own_class_top1"] <= 1.0
        for view in ("global", "local"):
            for region in ("all", "salient", "non-salient"):
                assert 0.0 <= m[f"{role}/{view}/{region}/miou"] <= 1.0


def test_class_angle_numbers(executed):
    m = probe_metrics(executed[0], "04_class_angles")
    for role in ROLES:
        for key in ("per_image_intra_deg", "per_image_inter_deg", "dataset_intra_deg", "dataset_inter_deg"):
            assert 0.0 <= m[f"{role}/{key}"] <= 180.0, key
        assert 1 <= m[f"{role}/n_images_inter"] <= m[f"{role}/n_images"] <= 24
    assert (m["paper_dcn/per_image_intra_deg"], m["paper_dcn/per_image_inter_deg"]) == (44.76, 51.55)
    assert (m["paper_dcn/dataset_intra_deg"], m["paper_dcn/dataset_inter_deg"]) == (49.28, 24.91)
    assert "paper" in m["paper_dcn/source"] and "ViT-S/8" in m["paper_dcn/source"]


def test_clustering_numbers(executed):
    m = probe_metrics(executed[0], "05_tsne_and_clustering")
    for role in ROLES:
        for method in ("per-image k-means", "dataset k-means"):
            for protocol in ("hungarian", "per-image"):
                assert 0.0 <= m[f"{role}/{method}/{protocol}/miou"] <= 1.0
                for k in (3, 5):                                 # the smoke profile sweeps the first two K
                    assert 0.0 <= m[f"{role}/K={k}/{method}/{protocol}/miou"] <= 1.0
