"""Dataset layer: every loader on a tiny fake root in its real layout, label mappings, errors, transforms,
collation and ``nbseg data check``."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

import nbseg.cli
import nbseg.world
from nbseg.data import (CenterCrop, Compose, Resize, ResizeSquare, SegSample, collate_samples, load_dataset)
from nbseg.data.check import check_dataset
from nbseg.data.cityscapes import CITYSCAPES27_CLASSES
from nbseg.data.cocostuff import COARSE_CLASSES, FINE_CLASSES, FINE_TO_COARSE
from nbseg.errors import DataError


# ----------------------------------------------------------------------------------------------------------
# Fake roots
# ----------------------------------------------------------------------------------------------------------

def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    if mode == "P":
        im.putpalette(nbseg.world.voc_palette())
    im.save(path)


def _write_list(path, ids) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


def _labels(h: int, w: int, values: list[int], seed: int) -> np.ndarray:
    """(h, w) uint8 map using every value of ``values`` at least once."""
    flat = np.random.default_rng(seed).choice(values, h * w).astype(np.uint8)
    flat[: len(values)] = values
    return flat.reshape(h, w)


@pytest.fixture
def voc_root(tmp_path):
    """VOC2012 with train (a, b) and val (c), 16x24 jpg images, palette labels holding 0..20 and 255."""
    root = tmp_path / "VOCdevkit" / "VOC2012"
    labels = {}
    for k, name in enumerate("abc"):
        _save(root / "JPEGImages" / f"{name}.jpg", _rgb(16, 24, k))
        labels[name] = _labels(16, 24, list(range(21)) + [255], k)
        _save(root / "SegmentationClass" / f"{name}.png", labels[name], "P")
        _save(root / "SegmentationClassAug" / f"{name}.png", labels[name], "L")
    _write_list(root / "ImageSets/Segmentation/train.txt", ["a", "b"])
    _write_list(root / "ImageSets/Segmentation/val.txt", ["c"])
    # DeepLab's trainaug list format: image and label paths on one line.
    (root / "ImageSets/SegmentationAug").mkdir(parents=True)
    (root / "ImageSets/SegmentationAug/train_aug.txt").write_text(
        "/JPEGImages/a.jpg /SegmentationClassAug/a.png\n/JPEGImages/c.jpg /SegmentationClassAug/c.png\n")
    return root, labels


@pytest.fixture(scope="module")
def world_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("world") / "w"
    nbseg.world.write_world(root, nbseg.world.WorldSpec(n_train=4, n_val=3, size=32), progress=False, workers=1)
    return root


# ----------------------------------------------------------------------------------------------------------
# VOC
# ----------------------------------------------------------------------------------------------------------

def test_voc_reads_palette_indices_and_keeps_ignore(voc_root):
    root, labels = voc_root
    ds = load_dataset("voc", root, "train")
    assert ds.ids == ["a", "b"] and ds.num_classes == 21 and ds.class_names[15] == "person"
    assert ds.describe() == "voc/train (21 classes, 2 images)"
    sample = ds[1]
    assert isinstance(sample, SegSample) and sample.id == "b"
    assert sample.image.shape == (3, 16, 24) and sample.image.dtype == torch.float32
    assert 0.0 <= float(sample.image.min()) and float(sample.image.max()) <= 1.0
    assert sample.label.dtype == torch.long
    assert torch.equal(sample.label, torch.from_numpy(labels["b"]).long())   # indices, not palette colours
    assert 255 in sample.label.unique().tolist()


def test_voc_parent_folder_trainaug_and_png_images(voc_root):
    root, labels = voc_root
    aug = load_dataset("voc", root.parent.parent, "trainaug")   # the folder holding VOCdevkit/ works too
    assert aug.root == root and aug.ids == ["a", "c"]
    assert aug.label_path(1) == root / "SegmentationClassAug" / "c.png"
    assert torch.equal(aug[1].label, torch.from_numpy(labels["c"]).long())
    (root / "JPEGImages" / "c.jpg").unlink()
    _save(root / "JPEGImages" / "c.png", _rgb(16, 24, 9))
    assert torch.equal(load_dataset("voc", root, "val")[0].image,
                       torch.from_numpy(_rgb(16, 24, 9)).permute(2, 0, 1).float() / 255)


def test_voc_errors_name_the_file_and_the_fix(voc_root, tmp_path):
    root, _ = voc_root
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("voc", tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"test\.txt is missing.*train.*val"):
        load_dataset("voc", root, "test")
    (root / "JPEGImages" / "a.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError, match=r"a\.jpg cannot be read"):
        load_dataset("voc", root, "train")[0]
    png = root / "JPEGImages" / "a.png"     # a truncated PNG only fails when decoded
    _save(png, _rgb(16, 24, 0))
    (root / "JPEGImages" / "a.jpg").unlink()
    png.write_bytes(png.read_bytes()[:200])
    with pytest.raises(DataError, match=r"a\.png cannot be read"):
        load_dataset("voc", root, "train")[0]
    _save(root / "SegmentationClass" / "b.png", np.zeros((16, 20), np.uint8), "P")
    with pytest.raises(DataError, match=r"b\.png is 20x16 \(WxH\) but its image .*b\.jpg is 24x16"):
        load_dataset("voc", root, "train")[1]
    bad = np.zeros((16, 24), np.uint8)
    bad[3, 4] = 30
    _save(root / "SegmentationClass" / "c.png", bad, "P")
    with pytest.raises(DataError, match=r"label value 30 in .*c\.png is out of range.*21 classes.*1 pixels"):
        load_dataset("voc", root, "val")[0]
    (root / "JPEGImages" / "c.jpg").unlink()
    with pytest.raises(DataError, match=r"image for id 'c' is listed but missing"):
        load_dataset("voc", root, "val")[0]
    _save(root / "SegmentationClass" / "a.png", _rgb(16, 24, 0))
    _save(root / "JPEGImages" / "a.png", _rgb(16, 24, 0))
    with pytest.raises(DataError, match=r"mode 'RGB'"):
        load_dataset("voc", root, "train")[0]


# ----------------------------------------------------------------------------------------------------------
# The embedded world
# ----------------------------------------------------------------------------------------------------------

def test_world_label_sets(world_root):
    table = json.loads((world_root / "classes.json").read_text())
    voc = load_dataset("world", world_root, "val", labels="voc")
    full = load_dataset("world", world_root, "val", labels="full")
    coarse = load_dataset("world", world_root, "val", labels="coarse")
    assert voc.describe() == "world/val (voc labels, 32 px, 3 images)"
    assert voc.class_names == table["voc"]["names"] and voc.num_classes == 9
    assert full.class_names == table["full"]["names"] and full.num_classes == 13
    assert coarse.class_names == table["coarse"]["names"]
    voc_values, full_values = set(), set()
    to_coarse = torch.tensor(table["coarse"]["full_to_coarse"])
    for i in range(len(voc)):
        v, f, c = voc[i], full[i], coarse[i]
        assert v.image.shape == (3, 32, 32) and v.id == f.id == c.id
        voc_values |= set(v.label.unique().tolist())
        full_values |= set(f.label.unique().tolist())
        assert torch.equal(c.label, to_coarse[f.label])
        # VOC things are full things shifted by one; full stuff is VOC background.
        thing = (v.label >= 1) & (v.label <= 8)
        assert torch.equal(v.label[thing] - 1, f.label[thing])
        assert bool((f.label[v.label == 0] >= 8).all())
    assert voc_values <= set(range(9)) | {255} and 255 in voc_values and 0 in voc_values
    assert 255 not in full_values and full_values <= set(range(13))
    assert len(load_dataset("world", world_root, "train")) == 4


def _small_default_spec(size=None):
    """Stands in for the 2,300-image default world at each render size."""
    return nbseg.world.WorldSpec(n_train=1, n_val=2, size=size or nbseg.world.TRAIN_SIZE)


def test_world_root_generation_only_for_the_default_root(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="nbseg world"):
        load_dataset("world", tmp_path / "typo")
    assert not (tmp_path / "typo").exists()       # a non-default root is never generated

    monkeypatch.setenv("NBSEG_DATA", str(tmp_path / "data"))
    generated = []
    real_ensure = nbseg.world.ensure_world

    def recording_ensure(root, spec, *args, **kwargs):
        generated.append((root, spec.size))
        return real_ensure(root, spec, progress=False)

    monkeypatch.setattr(nbseg.world, "default_spec", _small_default_spec)
    monkeypatch.setattr(nbseg.world, "ensure_world", recording_ensure)
    ds = load_dataset("world")
    assert generated == [(tmp_path / "data" / "world", 96)] and ds.root == generated[0][0] and len(ds) == 2
    load_dataset("world", tmp_path / "data" / "world", "train")
    load_dataset("world", split="train")
    assert len(generated) == 1                    # complete now: not generated again

    # A default root of an older format version is regenerated in place; one of another size is never overwritten.
    marker = tmp_path / "data" / "world" / "world.json"
    stale = json.loads(marker.read_text())
    stale["spec"]["version"] -= 1
    marker.write_text(json.dumps(stale))
    assert load_dataset("world")[0].image.shape[-1] == 96 and len(generated) == 2
    other = json.loads(marker.read_text())
    other["spec"]["size"] = 192
    marker.write_text(json.dumps(other))
    with pytest.raises(DataError, match="holds a 192-px render, not the 96-px one.*move it elsewhere"):
        load_dataset("world")
    assert json.loads(marker.read_text()) == other and len(generated) == 2


def test_the_world_has_a_probe_render_beside_the_training_render(tmp_path, monkeypatch):
    monkeypatch.setenv("NBSEG_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(nbseg.world, "default_spec", _small_default_spec)
    train_render = load_dataset("world")                      # what every method's world config reads
    probe_render = load_dataset("world", size=nbseg.world.PROBE_SIZE)
    assert train_render.root == tmp_path / "data" / "world"
    assert probe_render.root == tmp_path / "data" / "world_192px" == nbseg.world.default_root(192)
    assert [train_render[i].id for i in range(2)] == [probe_render[i].id for i in range(2)]
    assert train_render.class_names == probe_render.class_names
    assert tuple(train_render[0].image.shape[-2:]) == (96, 96)
    assert tuple(probe_render[0].image.shape[-2:]) == (192, 192)
    assert train_render.describe() == "world/val (voc labels, 96 px, 2 images)"      # titles say which render
    assert probe_render.describe() == "world/val (voc labels, 192 px, 2 images)"

    # The probes read the larger render of the default world; the claims (compared with methods) the training one.
    from nbseg.probes.basics import open_dataset
    assert open_dataset("world").root == probe_render.root
    assert open_dataset("world", world_size=96).root == train_render.root
    assert open_dataset("world", str(train_render.root)).root == train_render.root    # a root's own render

    with pytest.raises(DataError, match="at least 16 px"):
        load_dataset("world", size=8)
    # A given root must be the render asked for; the error names the fix.
    with pytest.raises(DataError, match="rendered at 96 px, not the 192 px.*--size 192"):
        load_dataset("world", train_render.root, size=192)

    # `nbseg world --size S` without a folder writes that render's default root, never over the training render.
    before = (train_render.root / "world.json").read_text()
    assert nbseg.cli.main(["world", "--size", "48", "--train", "1", "--val", "1", "--workers", "1"]) == 0
    assert (tmp_path / "data" / "world_48px" / "world.json").is_file()
    assert (train_render.root / "world.json").read_text() == before


# ----------------------------------------------------------------------------------------------------------
# COCO-Stuff-27
# ----------------------------------------------------------------------------------------------------------

def _fine(name: str) -> int:
    return [n for n, _ in FINE_CLASSES].index(name)


def test_cocostuff_fine_to_coarse_table():
    assert len(FINE_CLASSES) == len(FINE_TO_COARSE) == 182 and len(COARSE_CLASSES) == 27
    coarse_of = {name: FINE_TO_COARSE[_fine(name)] for name, _ in FINE_CLASSES}
    assert FINE_TO_COARSE[0] == 9 == COARSE_CLASSES.index("person")
    assert FINE_TO_COARSE[2] == 11 == COARSE_CLASSES.index("vehicle")       # fine 2 = car
    assert COARSE_CLASSES[coarse_of["sky-other"]] == "sky"
    assert COARSE_CLASSES[coarse_of["grass"]] == "plant"
    assert COARSE_CLASSES[coarse_of["wall-brick"]] == "wall"
    assert COARSE_CLASSES[coarse_of["sea"]] == "water"
    assert COARSE_CLASSES[coarse_of["giraffe"]] == "animal"
    assert COARSE_CLASSES[coarse_of["toothbrush"]] == "indoor"
    assert COARSE_CLASSES[coarse_of["wood"]] == "solid"
    unused = [i for i in range(91) if FINE_TO_COARSE[i] == 255]
    assert unused == [11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90]           # COCO ids 12, 26, ... 91, minus 1
    assert all(0 <= c <= 11 for c in FINE_TO_COARSE[:91] if c != 255)
    assert all(12 <= c <= 26 for c in FINE_TO_COARSE[91:])
    assert set(FINE_TO_COARSE) - {255} == set(range(27))


@pytest.fixture
def coco_root(tmp_path):
    root = tmp_path / "cocostuff"
    fine = np.array([[0, 2, _fine("sky-other"), _fine("grass")],
                     [_fine("wall-brick"), _fine("sea"), 11, 255]] * 2, np.uint8)       # (4, 4)
    for split, ids in (("train2017", ["000000000009", "000000000025"]), ("val2017", ["000000000139"])):
        for k, image_id in enumerate(ids):
            _save(root / "images" / split / f"{image_id}.jpg", _rgb(4, 4, k))
            _save(root / "annotations" / split / f"{image_id}.png", fine, "L")
    _write_list(root / "curated/train2017/Coco164kFull_Stuff_Coarse.txt", ["000000000025"])
    _write_list(root / "curated/val2017/Coco164kFull_Stuff_Coarse_7.txt", ["000000000139"])
    return root


def test_cocostuff_loads_curated_lists_and_maps_to_27(coco_root, tmp_path):
    ds = load_dataset("cocostuff27", coco_root, "val")
    assert ds.ids == ["000000000139"] and ds.num_classes == 27
    c = COARSE_CLASSES.index
    expected = torch.tensor([[c("person"), c("vehicle"), c("sky"), c("plant")],
                             [c("wall"), c("water"), 255, 255]] * 2)
    assert torch.equal(ds[0].label, expected)
    assert load_dataset("cocostuff27", coco_root, "train").ids == ["000000000025"]
    list_file = tmp_path / "ids.txt"
    _write_list(list_file, ["000000000009", "000000000025"])
    assert load_dataset("cocostuff27", coco_root, "train", list_file=list_file).ids == [
        "000000000009", "000000000025"]
    assert len(load_dataset("cocostuff27", coco_root, "train", curated=False)) == 2


def test_cocostuff_errors(coco_root):
    bad = np.full((4, 4), 3, np.uint8)
    bad[1, 1] = 200                                       # beyond the 182 fine ids and not 255
    _save(coco_root / "annotations/val2017/000000000139.png", bad, "L")
    with pytest.raises(DataError, match=r"label value 200 in .*139\.png is not a valid raw label.*0\.\.181, 255"):
        load_dataset("cocostuff27", coco_root, "val")[0]
    (coco_root / "curated/val2017/Coco164kFull_Stuff_Coarse_7.txt").unlink()
    with pytest.raises(DataError, match=r"Coarse_7\.txt is missing.*list_file"):
        load_dataset("cocostuff27", coco_root, "val")


# ----------------------------------------------------------------------------------------------------------
# Cityscapes-27
# ----------------------------------------------------------------------------------------------------------

def test_cityscapes_labelids_7_to_33_become_0_to_26(tmp_path):
    root = tmp_path / "cityscapes"
    label_ids = np.arange(36, dtype=np.uint8).reshape(6, 6)
    label_ids[5, 5] = 255
    for city, frame in (("aachen", "000000_000019"), ("bochum", "000001_000019")):
        stem = f"{city}_{frame}"
        _save(root / "leftImg8bit/train" / city / f"{stem}_leftImg8bit.png", _rgb(6, 6, 0))
        _save(root / "gtFine/train" / city / f"{stem}_gtFine_labelIds.png", label_ids, "L")
    ds = load_dataset("cityscapes27", root, "train")
    assert ds.ids == ["aachen_000000_000019", "bochum_000001_000019"] and len(CITYSCAPES27_CLASSES) == 27
    assert ds.class_names[0] == "road" and ds.class_names[26] == "bicycle"
    raw = torch.from_numpy(label_ids).long()
    expected = torch.where((raw >= 7) & (raw <= 33), raw - 7, torch.full_like(raw, 255))
    assert torch.equal(ds[1].label, expected)
    assert set(ds[0].label.unique().tolist()) == set(range(27)) | {255}
    with pytest.raises(DataError, match=r"leftImg8bit/val is missing.*\['train'\]"):
        load_dataset("cityscapes27", root, "val")


# ----------------------------------------------------------------------------------------------------------
# Potsdam
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture
def potsdam_root(tmp_path):
    root = tmp_path / "potsdam"
    (root / "imgs").mkdir(parents=True)
    (root / "gt").mkdir()
    gt = np.array([[0, 1, 2], [3, 4, 5], [255, 0, 1]], np.uint8)
    for k, tile in enumerate(["t0", "t1", "t2", "u0"]):
        rgbir = np.random.default_rng(k).uniform(0, 255, (3, 3, 4))          # float 0..255, as IIC saves
        savemat(root / "imgs" / f"{tile}.mat", {"img": rgbir})
        if not tile.startswith("u"):
            savemat(root / "gt" / f"{tile}.mat", {"gt": gt})
    _write_list(root / "labelled_train.txt", ["t0", "t1"])
    _write_list(root / "labelled_test.txt", ["t2"])
    _write_list(root / "unlabelled_train.txt", ["u0"])
    return root, gt


def test_potsdam_6_and_3_classes(potsdam_root):
    root, gt = potsdam_root
    six = load_dataset("potsdam", root, "train")
    assert six.ids == ["t0", "t1"] and six.num_classes == 6
    sample = six[0]
    rgbir = np.random.default_rng(0).uniform(0, 255, (3, 3, 4))
    assert torch.allclose(sample.image, torch.from_numpy(rgbir[:, :, :3] / 255).permute(2, 0, 1).float())
    assert torch.equal(sample.label, torch.from_numpy(gt).long())
    three = load_dataset("potsdam3", root, "test")
    assert three.describe() == "potsdam3/test (3 coarse classes, 1 images)"
    assert three.class_names == ["roads and cars", "buildings and clutter", "vegetation"]
    # road 0 -> 0, building 1 -> 1, low veg 2 -> 2, tree 3 -> 2, car 4 -> 0, clutter 5 -> 1
    assert torch.equal(three[0].label, torch.tensor([[0, 1, 2], [2, 0, 1], [255, 0, 1]]))
    assert load_dataset("potsdam", root, "val").ids == ["t2"]
    unlabelled = load_dataset("potsdam", root, "unlabelled_train")
    assert unlabelled[0].label is None and unlabelled[0].image.shape == (3, 3, 3)
    everything = load_dataset("potsdam", root, "all")
    assert everything.ids == ["t0", "t1", "u0", "t2"]
    assert [everything[i].label is None for i in range(4)] == [False, False, True, False]


def test_potsdam_uint8_tiles_and_errors(potsdam_root):
    root, gt = potsdam_root
    rgbir = np.full((3, 3, 4), 51, np.uint8)
    savemat(root / "imgs" / "t0.mat", {"img": rgbir})
    assert torch.allclose(load_dataset("potsdam", root, "train")[0].image, torch.full((3, 3, 3), 0.2))
    savemat(root / "gt" / "t1.mat", {"gt": np.full((3, 3), 6, np.uint8)})
    with pytest.raises(DataError, match=r"label value 6 in .*t1\.mat is out of range"):
        load_dataset("potsdam", root, "train")[1]
    with pytest.raises(DataError, match=r"label value 6 in .*t1\.mat is not a valid raw label"):
        load_dataset("potsdam3", root, "train")[1]
    savemat(root / "imgs" / "t2.mat", {"image": rgbir})
    with pytest.raises(DataError, match=r"t2\.mat has no 'img' array"):
        load_dataset("potsdam", root, "val")[0]
    (root / "imgs" / "t2.mat").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"t2\.mat cannot be read"):
        load_dataset("potsdam", root, "val")[0]
    (root / "labelled_test.txt").unlink()
    with pytest.raises(DataError, match=r"labelled_test\.txt is missing"):
        load_dataset("potsdam", root, "val")


# ----------------------------------------------------------------------------------------------------------
# Folder
# ----------------------------------------------------------------------------------------------------------

def test_folder_without_and_with_masks(tmp_path):
    root = tmp_path / "mine"
    _save(root / "x.png", _rgb(8, 10, 0))
    _save(root / "sub" / "y.jpg", _rgb(8, 10, 1))
    (root / "notes.txt").write_text("not an image")
    plain = load_dataset("folder", root)
    assert plain.ids == ["sub/y", "x"] and plain.split == "all" and plain.describe().endswith("(unlabelled, 2 images)")
    assert plain[1].label is None and plain[1].image.shape == (3, 8, 10)

    mask_x, mask_y = _labels(8, 10, [0, 1, 2, 255], 0), _labels(8, 10, [0, 3], 1)
    _save(root / "masks" / "x.png", mask_x, "L")         # masks inside the root are not taken as images
    _save(root / "masks" / "y.png", mask_y, "L")
    labelled = load_dataset("folder", root, masks_dir="masks")
    assert labelled.ids == ["sub/y", "x"] and labelled.num_classes == 4          # inferred from max value 3
    assert torch.equal(labelled[1].label, torch.from_numpy(mask_x).long())
    named = load_dataset("folder", root, masks_dir=root / "masks", class_names=["a", "b", "c", "d", "e"])
    assert named.class_names[4] == "e" and named.num_classes == 5
    with pytest.raises(DataError, match=r"label value 3 in .*y\.png is out of range.*num_classes"):
        load_dataset("folder", root, masks_dir="masks", num_classes=3)[0]
    (root / "masks" / "y.png").unlink()
    with pytest.raises(DataError, match=r"no mask for image .*y\.jpg"):
        load_dataset("folder", root, masks_dir="masks")


# ----------------------------------------------------------------------------------------------------------
# Transforms and collation
# ----------------------------------------------------------------------------------------------------------

def _pair(h=12, w=18):
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))
    label = torch.from_numpy(_labels(h, w, [0, 3, 7, 255], 0)).long()
    return image, label


def test_transforms_keep_label_values_and_are_deterministic():
    image, label = _pair()
    out_image, out_label = Resize(6)(image, label)
    assert out_image.shape == (3, 6, 9) and out_label.shape == (6, 9)
    assert set(out_label.unique().tolist()) <= {0, 3, 7, 255}
    assert 0.0 <= float(out_image.min()) and float(out_image.max()) <= 1.0
    # Nearest upsampling by 2 repeats each label pixel exactly.
    _, up = ResizeSquare((24, 36))(image, label)
    assert torch.equal(up, label.repeat_interleave(2, 0).repeat_interleave(2, 1))
    # Downsampling by 3 picks the centre pixel of each 3x3 block (PIL's nearest rule).
    _, down = ResizeSquare((4, 6))(image, label)
    assert torch.equal(down, label[1::3, 1::3])
    tall_image, tall_label = Resize(8)(image.transpose(1, 2), label.T)   # short side is the width here
    assert tall_image.shape == (3, 12, 8) and tall_label.shape == (12, 8)
    crop_image, crop_label = CenterCrop(8)(image, label)
    assert torch.equal(crop_image, image[:, 2:10, 5:13]) and torch.equal(crop_label, label[2:10, 5:13])
    pipeline = Compose([Resize(8), CenterCrop(8)])
    a, b = pipeline(image, label), pipeline(image, label)
    assert a[0].shape == (3, 8, 8) and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert pipeline(image, None)[1] is None
    with pytest.raises(DataError, match="Resize"):
        CenterCrop(20)(image, label)


def test_collate_samples(voc_root):
    root, _ = voc_root
    ds = load_dataset("voc", root, "train", transform=ResizeSquare(8))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_samples)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, 8, 8) and batch["label"].shape == (2, 8, 8)
    assert batch["label"].dtype == torch.long and batch["id"] == ["a", "b"]
    image, label = _pair()
    with pytest.raises(DataError, match=r"different sizes.*Resize"):
        collate_samples([SegSample(image, label, "p"), SegSample(image[:, :6], label[:6], "q")])
    with pytest.raises(DataError, match="labelled and unlabelled"):
        collate_samples([SegSample(image, label, "p"), SegSample(image, None, "q")])
    unlabelled = collate_samples([SegSample(image, None, "p"), SegSample(image, None, "q")])
    assert unlabelled["label"] is None and unlabelled["image"].shape == (2, 3, 12, 18)


# ----------------------------------------------------------------------------------------------------------
# check_dataset and `nbseg data check`
# ----------------------------------------------------------------------------------------------------------

def test_check_dataset_counts_pixels(world_root):
    ds = load_dataset("world", world_root, "train")
    table = check_dataset(ds)
    labels = torch.stack([ds[i].label for i in range(len(ds))])
    assert list(table["class"]) == ds.class_names + ["(ignore)"]
    assert int(table["pixels"].sum()) == labels.numel() == 4 * 32 * 32
    assert int(table.loc[table["id"] == 255, "pixels"].iloc[0]) == int((labels == 255).sum())
    assert int(table.loc[table["id"] == 0, "pixels"].iloc[0]) == int((labels == 0).sum())
    assert table.attrs["images"] == 4 and abs(table["share"].sum() - 1) < 1e-9
    assert check_dataset(ds, limit=1).attrs["images"] == 1


@pytest.fixture
def cli_main(monkeypatch):
    """``nbseg.cli.main`` with only the commands this test needs, so it does not depend on other modules."""
    monkeypatch.setattr(nbseg.cli, "COMMAND_MODULES", ["nbseg.world", "nbseg.data.check"])
    return nbseg.cli.main


def test_cli_data_check_world(world_root, cli_main, capsys):
    assert cli_main(["data", "check", "world", str(world_root)]) == 0
    out = capsys.readouterr().out
    assert "world/train (voc labels, 32 px, 4 images): 4 images checked" in out
    assert "world/val (voc labels, 32 px, 3 images): 3 images checked" in out
    ds = load_dataset("world", world_root, "val")
    background = int(sum(int((ds[i].label == 0).sum()) for i in range(3)))
    val_block = out.split("world/val")[1]
    row = next(line for line in val_block.splitlines() if line.split()[:2] == ["0", "background"])
    assert int(row.split()[2]) == background
    assert cli_main(["data", "check", "world", str(world_root), "--split", "val", "--labels", "full",
                     "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "world/val (full labels, 32 px, 3 images): 2 images checked" in out and "world/train" not in out
    ignore_row = next(line for line in out.splitlines() if "(ignore)" in line)
    assert ignore_row.split()[2] == "0"


def test_cli_data_check_reports_bad_files(voc_root, cli_main, capsys):
    root, _ = voc_root
    (root / "JPEGImages" / "b.jpg").write_bytes(b"broken")
    assert cli_main(["data", "check", "voc", str(root)]) == 2
    err = capsys.readouterr().err
    assert "nbseg data: error:" in err and "b.jpg cannot be read" in err
    assert cli_main(["data", "check", "voc", str(root), "--labels", "full"]) == 2
    assert "--labels only applies to the 'world'" in capsys.readouterr().err


def test_cli_data_check_help_explains_arguments(cli_main, capsys):
    with pytest.raises(SystemExit):
        cli_main(["data", "check", "--help"])
    out = capsys.readouterr().out
    for word in ("NAME", "ROOT", "--split", "--labels", "--limit", "--option"):
        assert word in out
