"""Evaluation metrics and ``nbseg eval``: every expected number below is computed by hand in the comments."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import nbseg.cli
from nbseg.errors import ConfigError, DataError
from nbseg.evaluation import (
    ConfusionAccumulator,
    confusion_matrix,
    evaluate,
    evaluate_hungarian,
    evaluate_many_to_one,
    evaluate_per_image_precision,
    hungarian_match,
    many_to_one_match,
    scores_from_confusion,
)


def row(*ids):
    """A (1, N) label map from ids."""
    return np.array([ids], dtype=np.int64)


# ---------------------------------------------------------------------------------------------- confusion matrix

def test_confusion_matrix_counts_pred_rows_gt_columns():
    gt = row(0, 0, 0, 0, 1, 1, 1, 1, 1, 1)
    pred = row(1, 1, 1, 0, 0, 0, 0, 0, 0, 1)
    # cluster 0: 1 pixel of class 0, 5 of class 1; cluster 1: 3 of class 0, 1 of class 1
    assert confusion_matrix(pred, gt, 2, 2).tolist() == [[1, 5], [3, 1]]
    assert confusion_matrix(torch.from_numpy(pred), torch.from_numpy(gt), 2, 2).dtype == torch.long


def test_ignore_pixels_are_dropped_before_counting_even_with_out_of_range_predictions():
    gt = row(0, 1, 255, -1, 1)
    pred = row(0, 1, 99, 99, 0)  # 99 is out of range for K=2 but sits on ignored pixels
    assert confusion_matrix(pred, gt, 2, 2).tolist() == [[1, 1], [0, 1]]
    assert confusion_matrix(row(0, 0, 1), row(0, 5, 1), 2, 2, ignore_index=5).tolist() == [[1, 0], [0, 1]]


def test_out_of_range_ids_raise_a_value_error_naming_the_value():
    with pytest.raises(ValueError, match="cluster id 5"):
        confusion_matrix(row(0, 5), row(0, 1), 3, 2)
    with pytest.raises(ValueError, match="class id 7"):
        confusion_matrix(row(0, 1), row(0, 7), 3, 2)
    with pytest.raises(ValueError, match="cluster id -2"):
        confusion_matrix(row(0, -2), row(0, 1), 3, 2)
    with pytest.raises(DataError, match="differ in size"):
        confusion_matrix(row(0, 1, 1), row(0, 1), 2, 2)


def test_accumulator_sums_batches_and_counts_images():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 3, size=(4, 5, 6))
    pred = rng.integers(0, 4, size=(4, 5, 6))
    acc = ConfusionAccumulator(4, 3)
    acc.update(pred[:3], gt[:3])  # a batch of 3
    acc.update(pred[3], gt[3])    # a single image
    assert acc.n_images == 4
    assert torch.equal(acc.matrix, confusion_matrix(pred, gt, 4, 3))
    assert ConfusionAccumulator(2, 2).matrix.tolist() == [[0, 0], [0, 0]]


def test_device_agnostic_counting():
    """Runs on CUDA when there is one, on the CPU otherwise; the numbers must not depend on the device."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 4, size=(3, 16, 16))
    gt[0, :2] = 255
    pred = rng.integers(0, 5, size=(3, 16, 16))
    on_device = confusion_matrix(torch.from_numpy(pred).to(device), torch.from_numpy(gt), 5, 4)
    assert on_device.device.type == device
    assert torch.equal(on_device.cpu(), confusion_matrix(pred, gt, 5, 4))
    acc = ConfusionAccumulator(5, 4, device=device)
    acc.update(pred, gt)
    assert acc.matrix.device.type == device
    result_device = evaluate([torch.from_numpy(pred)], [torch.from_numpy(gt)], 5, 4, device=device)
    result_cpu = evaluate([pred], [gt], 5, 4)
    assert result_device.to_dict() == result_cpu.to_dict()


# ---------------------------------------------------------------------------------------------- matching

def test_hungarian_on_permuted_perfect_prediction_scores_one():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 5, size=(3, 20, 20))
    gt[:, 0, :] = 255
    permutation = np.array([3, 0, 4, 1, 2])
    pred = permutation[np.where(gt == 255, 0, gt)]
    result = evaluate_hungarian([gt_i for gt_i in pred], [gt_i for gt_i in gt], 5, 5)
    assert result.miou == 1.0 and result.pixel_acc == 1.0 and result.n_images == 3
    # mapping[cluster] = class, i.e. the inverse permutation
    assert result.mapping == np.argsort(permutation).tolist()


def test_hungarian_hand_computed_two_by_two():
    gt = row(0, 0, 0, 0, 1, 1, 1, 1, 1, 1)
    pred = row(1, 1, 1, 0, 0, 0, 0, 0, 0, 1)
    # confusion [[1, 5], [3, 1]]: swapping matches 5 + 3 = 8 pixels, the identity only 2.
    result = evaluate([pred], [gt], 2, 2, class_names=["a", "b"])
    assert result.mapping == [1, 0]
    # class a: TP 3, FP 1 (cluster 1 on b), FN 1 (cluster 0 on a) -> 3/5
    # class b: TP 5, FP 1 (cluster 0 on a), FN 1 (cluster 1 on b) -> 5/7
    assert result.per_class["a"] == pytest.approx(3 / 5)
    assert result.per_class["b"] == pytest.approx(5 / 7)
    assert result.miou == pytest.approx((3 / 5 + 5 / 7) / 2)
    assert result.pixel_acc == pytest.approx(8 / 10)


def test_hungarian_with_more_clusters_than_classes_counts_unmatched_pixels_as_errors():
    gt = row(0, 0, 0, 0, 1, 1, 1, 1)
    pred = row(0, 0, 0, 2, 1, 1, 1, 2)
    # confusion: cluster 0 -> 3 px of class 0; cluster 1 -> 3 px of class 1; cluster 2 -> 1 px of each.
    result = evaluate([pred], [gt], 3, 2)
    assert result.mapping == [0, 1, -1]
    # class 0: TP 3, FP 0, FN 1 (its pixel in the unmatched cluster) -> 3/4; class 1 likewise.
    assert result.per_class == {"0": pytest.approx(0.75), "1": pytest.approx(0.75)}
    assert result.miou == pytest.approx(0.75)
    assert result.pixel_acc == pytest.approx(6 / 8)
    assert result.unmatched.tolist() == [1, 1]
    table = result.table()
    assert table["gt_pixels"].tolist() == [4, 4] and table["pred_pixels"].tolist() == [3, 3]
    assert table["precision"].tolist() == [1.0, 1.0] and table["recall"].tolist() == [0.75, 0.75]

    # many-to-one sends cluster 2 to its majority class (tie -> lowest id 0):
    # class 0: TP 4, FP 1, FN 0 -> 4/5; class 1: TP 3, FP 0, FN 1 -> 3/4.
    m2o = evaluate([pred], [gt], 3, 2, protocol="many-to-one")
    assert m2o.mapping == [0, 1, 0]
    assert m2o.miou == pytest.approx((4 / 5 + 3 / 4) / 2)
    assert m2o.pixel_acc == pytest.approx(7 / 8)


def test_hungarian_with_fewer_clusters_than_classes_gives_iou_zero_to_unserved_classes():
    gt = row(0, 0, 1, 1, 1, 2)
    pred = row(0, 0, 1, 1, 1, 1)
    # cluster 0 -> class 0 (2 px); cluster 1 -> class 1 (3 px) + class 2 (1 px), matched to class 1.
    result = evaluate([pred], [gt], 2, 3)
    assert result.mapping == [0, 1]
    # class 0: 2/2 = 1; class 1: TP 3, FP 1 -> 3/4; class 2: never predicted, FN 1 -> 0
    assert [result.per_class[c] for c in "012"] == pytest.approx([1.0, 0.75, 0.0])
    assert result.miou == pytest.approx(1.75 / 3)
    assert result.pixel_acc == pytest.approx(5 / 6)


def test_mean_over_stego_counts_a_predicted_absent_class_as_zero():
    # the case: class 2 is predicted on one pixel but absent from the ground truth
    gt, pred = row(0, 0, 1, 1), row(0, 2, 1, 1)
    present = evaluate([pred], [gt], 3, 3, mean_over="present")
    stego = evaluate([pred], [gt], 3, 3, mean_over="stego")
    assert present.miou == pytest.approx(0.75)                 # (0.5 + 1) / 2
    assert stego.miou == pytest.approx(0.50)                   # (0.5 + 1 + 0) / 3
    assert stego.per_class["2"] == 0.0 and math.isnan(present.per_class["2"])
    # a class neither present nor predicted stays out of the STEGO mean
    same = evaluate([row(0, 0, 1, 1)], [gt], 3, 3, mean_over="stego")
    assert same.miou == 1.0 and math.isnan(same.per_class["2"])
    assert "STEGO" in stego.to_dict()["mean_over_description"] and "(STEGO)" in stego.summary()
    # the same numbers re-averaged from a result's confusion matrix
    assert present.miou_over("stego") == pytest.approx(0.50) and stego.miou_over("present") == pytest.approx(0.75)
    assert present.miou_over("all") == pytest.approx(0.50)
    with pytest.raises(ConfigError, match="dataset-level"):
        evaluate([pred], [gt], 3, 3, protocol="per-image").miou_over("stego")


def test_mean_over_present_versus_all():
    gt = row(0, 0, 1, 1)
    pred = row(0, 0, 1, 1)
    # 3 classes, class 2 absent from the ground truth (and matched to the empty cluster 2)
    present = evaluate([pred], [gt], 3, 3, mean_over="present")
    assert present.miou == 1.0 and math.isnan(present.per_class["2"]) and present.mean_over == "present"
    every = evaluate([pred], [gt], 3, 3, mean_over="all")
    assert every.miou == pytest.approx(2 / 3) and every.per_class["2"] == 0.0 and every.mean_over == "all"
    as_dict = present.to_dict()
    assert as_dict["per_class"]["2"] is None
    json.dumps(as_dict, allow_nan=False)


def test_many_to_one_scores_one_when_clusters_refine_classes():
    rng = np.random.default_rng(2)
    gt = rng.integers(0, 3, size=(2, 12, 12))
    sub = rng.integers(0, 4, size=gt.shape)      # every class split into 4 clusters
    pred = gt * 4 + sub                           # 12 clusters, each inside one class
    result = evaluate_many_to_one([pred], [gt], 12, 3)
    assert result.miou == 1.0 and result.pixel_acc == 1.0
    assert result.mapping == [c // 4 for c in range(12)]
    hungarian = evaluate_hungarian([pred], [gt], 12, 3)
    assert hungarian.miou < 1.0  # one cluster per class only


def test_matching_functions_keep_the_input_kind():
    counts = np.array([[1, 5], [3, 1], [0, 0]])
    assert isinstance(hungarian_match(counts), np.ndarray)
    assert isinstance(hungarian_match(torch.from_numpy(counts)), torch.Tensor)
    assert many_to_one_match(counts).tolist() == [1, 0, -1]  # an empty cluster maps to nothing
    result = scores_from_confusion(counts, [1, 0, -1], ["x", "y"])
    assert result.miou == pytest.approx((3 / 5 + 5 / 7) / 2) and result.protocol == "custom"


# ---------------------------------------------------------------------------------------------- per-image protocol

def test_per_image_precision_protocol_by_hand():
    # Image A: gt 0 0 0 1 1 1, pred 0 0 1 1 1 2.
    #   cluster 0 -> class 0 (precision 2/2); cluster 1 -> class 1 (2/3 vs 1/3); cluster 2 -> class 1.
    #   class 0: TP 2, FP 0, FN 1 -> 2/3; class 1: TP 3, FP 1, FN 0 -> 3/4. mean 17/24, excl. first 3/4, acc 5/6.
    # Image B: gt 1 1 2 2 255 255, pred 2 2 2 0 1 1 (the last two pixels are ignored).
    #   cluster 2 -> class 1 (2/3); cluster 0 -> class 2; cluster 1 has no counted pixel.
    #   class 1: TP 2, FP 1, FN 0 -> 2/3; class 2: TP 1, FP 0, FN 1 -> 1/2. mean 7/12, excl. first 1/2, acc 3/4.
    preds = [row(0, 0, 1, 1, 1, 2), row(2, 2, 2, 0, 1, 1)]
    gts = [row(0, 0, 0, 1, 1, 1), row(1, 1, 2, 2, 255, 255)]
    result = evaluate_per_image_precision(preds, gts, 3, 3)
    assert result.miou == pytest.approx((17 / 24 + 7 / 12) / 2)
    assert result.miou_excl_first == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert result.pixel_acc == pytest.approx((5 / 6 + 3 / 4) / 2)
    assert result.per_class["0"] == pytest.approx(2 / 3)
    assert result.per_class["1"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert result.per_class["2"] == pytest.approx(1 / 2)
    assert result.n_images == 2 and result.protocol == "per-image"
    as_dict = result.to_dict()
    assert as_dict["miou_excl_first"] == pytest.approx(5 / 8)
    # the same pairs as one batch give the same numbers
    batched = evaluate(np.stack(preds)[None], np.stack(gts)[None], 3, 3, protocol="per-image")
    assert batched.to_dict() == as_dict


def test_per_image_skips_fully_ignored_images_and_rejects_mean_over_all():
    result = evaluate([row(0, 1), row(0, 1)], [row(0, 1), row(255, 255)], 2, 2, protocol="per-image")
    assert result.n_images == 1 and result.n_images_skipped == 1 and result.miou == 1.0
    with pytest.raises(ValueError, match="present"):
        evaluate([row(0)], [row(0)], 1, 1, protocol="per-image", mean_over="all")


def test_eval_size_resizes_both_maps_with_nearest():
    gt = np.kron(np.array([[0, 1], [2, 255]]), np.ones((50, 50), dtype=np.int64))  # 100 x 100 blocks
    pred = np.array([[2, 0], [1, 1]])                                               # 2 x 2 clusters
    with pytest.raises(DataError, match="eval_size"):
        evaluate([pred], [gt], 3, 3)
    result = evaluate([pred], [gt], 3, 3, eval_size=10)
    assert result.miou == 1.0 and result.eval_size == 10
    # per-image at 10 x 10 as well
    assert evaluate([pred], [gt], 3, 3, protocol="per-image", eval_size=(10, 10)).miou == 1.0


def test_result_summary_table_and_unknown_protocol():
    result = evaluate([row(0, 1)], [row(0, 1)], 2, 2, class_names=["bg", "cat"])
    assert "mIoU 100.00" in result.summary() and "hungarian" in result.summary()
    assert list(result.table().columns) == ["iou", "gt_pixels", "pred_pixels", "precision", "recall"]
    assert list(result.table().index) == ["bg", "cat"]
    for key in ("miou", "pixel_acc", "per_class", "n_images", "protocol", "mean_over"):
        assert key in result.to_dict()
    with pytest.raises(ValueError, match="protocol"):
        evaluate([row(0)], [row(0)], 1, 1, protocol="best-of")
    with pytest.raises(ValueError, match="class names"):
        evaluate([row(0)], [row(0)], 1, 1, class_names=["a", "b"])
    with pytest.raises(DataError, match="fewer"):
        evaluate([row(0), row(0)], [row(0)], 1, 1)


# ---------------------------------------------------------------------------------------------- nbseg eval

@pytest.fixture
def eval_cli(monkeypatch):
    monkeypatch.setattr(nbseg.cli, "COMMAND_MODULES", ["nbseg.evaluation.cli"])
    return nbseg.cli.main


def write_png(path, labels, palette=False):
    image = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="L")
    if palette:
        image = image.convert("P")
        image.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    permutation = np.array([2, 0, 1])
    for i in range(3):
        gt = rng.integers(0, 3, size=(8, 10))
        gt[0, 0] = 2  # every class id appears so C is inferred as 3
        pred = permutation[gt]
        gt[1, :] = 255
        write_png(gt_dir / f"img{i}.png", gt, palette=True)
        write_png(pred_dir / f"img{i}.png", pred)
    return gt_dir, pred_dir


def test_cli_json(eval_cli, folders, capsys):
    gt_dir, pred_dir = folders
    assert eval_cli(["eval", "--gt", str(gt_dir), "--pred", str(pred_dir), "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["miou"] == 1.0 and out["pixel_acc"] == 1.0 and out["n_images"] == 3
    assert out["protocol"] == "hungarian" and out["mean_over"] == "present"
    assert set(out["per_class"]) == {"0", "1", "2"}
    assert "inferred C=3" in captured.err and "inferred K=3" in captured.err


def test_cli_text_with_class_names_and_per_image(eval_cli, folders, tmp_path, capsys):
    gt_dir, pred_dir = folders
    names = tmp_path / "classes.json"
    names.write_text(json.dumps({"voc": {"names": ["sky", "cat", "dog"]}, "other": [1]}))
    code = eval_cli(["eval", "--gt", str(gt_dir), "--pred", str(pred_dir), "--protocol", "per-image",
                     "--class-names", f"{names}:voc", "--num-clusters", "3", "--eval-size", "4"])
    out = capsys.readouterr().out
    assert code == 0
    assert "per-image: mIoU" in out and "IoU %" in out and "dog" in out and "inferred" not in out
    # a multi-set file without a key names the keys to choose from
    assert eval_cli(["eval", "--gt", str(gt_dir), "--pred", str(pred_dir), "--class-names", str(names)]) == 2
    assert "voc" in capsys.readouterr().err


def test_cli_reports_unpaired_files(eval_cli, folders, capsys):
    gt_dir, pred_dir = folders
    write_png(gt_dir / "only_gt.png", np.zeros((8, 10)))
    write_png(pred_dir / "only_pred.png", np.zeros((8, 10)))
    assert eval_cli(["eval", "--gt", str(gt_dir), "--pred", str(pred_dir)]) == 2
    err = capsys.readouterr().err
    assert "only_gt.png" in err and "only_pred.png" in err and "Traceback" not in err


def test_cli_reports_size_mismatch_and_bad_ids(eval_cli, folders, capsys):
    gt_dir, pred_dir = folders
    write_png(pred_dir / "img1.png", np.zeros((4, 5)))
    assert eval_cli(["eval", "--gt", str(gt_dir), "--pred", str(pred_dir)]) == 2
    err = capsys.readouterr().err
    assert "img1.png" in err and "5x4" in err and "10x8" in err
    write_png(pred_dir / "img1.png", np.full((8, 10), 7))
    assert eval_cli(["eval", "--gt", str(gt_dir), "--pred", str(pred_dir), "--num-clusters", "3"]) == 2
    err = capsys.readouterr().err
    assert "img1.png" in err and "cluster id 7" in err
