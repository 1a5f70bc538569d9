"""Feature cache: contents equal the backbone's output, reuse without recomputation, resume after an interruption,
a new cache when the key changes, clear errors for damaged files, and the training loop's data contract."""
import json

import numpy as np
import pytest
import torch

from nbseg import backbones
from nbseg.data import load_dataset
from nbseg.data.base import resize_pair
from nbseg.features.cache import (CacheError, CachedFeatureDataset, FeatureCache, build_feature_cache, cache_key,
                                 weights_id)
from nbseg.train.data import epoch_loader, rank_batches

SIZE = 32           # 4 x 4 tokens for the ViT/8: fast
N = 6


@pytest.fixture(scope="module")
def backbone():
    return backbones.load("embedded", random_init=True, seed=0)


@pytest.fixture(scope="module")
def world():
    return load_dataset("world", split="val")


class Counting:
    """Counts the images a backbone extracts (wraps ``extract`` on the instance)."""

    def __init__(self, backbone):
        self.backbone, self.images, self.calls = backbone, 0, 0
        self.original = backbone.extract

    def __enter__(self):
        def extract(images, *args, **kwargs):
            self.calls += 1
            self.images += images.shape[0]
            return self.original(images, *args, **kwargs)
        self.backbone.extract = extract
        return self

    def __exit__(self, *exc):
        del self.backbone.extract


def build(backbone, world, root, **kw):
    kw.setdefault("limit", N)
    kw.setdefault("chunk_size", 2)
    return build_feature_cache(backbone, world, SIZE, root=root, progress=False, **kw)


def test_cache_holds_the_backbone_features_in_fp16(backbone, world, tmp_path):
    cache = build(backbone, world, tmp_path)
    assert len(cache) == N and cache.grid == (4, 4) and cache.dim == 192 and cache.num_heads == 6
    assert cache.ids == world.ids[:N] and cache.input_size == (SIZE, SIZE)
    assert cache.patches.dtype == np.float16 and isinstance(cache.patches, np.memmap)
    images = torch.stack([resize_pair(world[i].image, None, (SIZE, SIZE))[0] for i in range(N)])
    ref = backbone.extract(images)
    got = cache.features()
    for name in ("patches", "cls", "attn"):
        a, b = getattr(got, name), getattr(ref, name)
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=2e-3 * float(b.abs().max()) + 1e-6), name
    manifest = json.loads((cache.path / "manifest.json").read_text())
    assert manifest["key"]["weights"].startswith("random_init:") and manifest["key"]["input_size"] == [SIZE, SIZE]
    assert "RANDOM INIT" in cache.describe()


def test_second_build_reads_the_cache_without_the_backbone(backbone, world, tmp_path):
    build(backbone, world, tmp_path)
    with Counting(backbone) as count:
        cache = build(backbone, world, tmp_path)
    assert count.calls == 0 and len(cache) == N


def test_interrupted_build_resumes_where_it_stopped(backbone, world, tmp_path):
    def stop_after_two(chunks_done):
        if chunks_done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(backbone, world, tmp_path / "a", on_chunk=stop_after_two)
    path = next((tmp_path / "a").iterdir())
    assert not (path / "manifest.json").exists()
    assert json.loads((path / "progress.json").read_text())["chunks_done"] == 2
    with pytest.raises(CacheError, match="interrupted"):
        FeatureCache(path)
    with Counting(backbone) as count:
        resumed = build(backbone, world, tmp_path / "a")
    assert count.images == N - 4 and count.calls == 1             # only the third chunk of 2 images
    assert not (path / "progress.json").exists()
    straight = build(backbone, world, tmp_path / "b")
    for name in ("patches", "cls", "attn"):
        assert np.array_equal(getattr(resumed, name), getattr(straight, name))


def test_a_changed_key_builds_a_new_cache(backbone, world, tmp_path):
    first = build(backbone, world, tmp_path)
    other_weights = backbones.load("embedded", random_init=True, seed=1)
    assert weights_id(other_weights) != weights_id(backbone)
    variants = {
        "weights": lambda: build(other_weights, world, tmp_path),
        "input size": lambda: build_feature_cache(backbone, world, 40, root=tmp_path, limit=N, progress=False),
        "split": lambda: build(backbone, load_dataset("world", split="train"), tmp_path),
        "label set": lambda: build(backbone, load_dataset("world", split="val", labels="full"), tmp_path),
        "images": lambda: build(backbone, world, tmp_path, limit=N - 1),
    }
    paths = {first.path}
    for what, make in variants.items():
        cache = make()
        assert cache.path not in paths, what
        paths.add(cache.path)
    assert cache_key(backbone, world, SIZE, N) == first.key


def test_truncated_or_damaged_files_are_clear_errors(backbone, world, tmp_path):
    path = build(backbone, world, tmp_path).path
    patches = path / "patches.npy"
    data = patches.read_bytes()
    patches.write_bytes(data[: len(data) // 2])
    with pytest.raises(CacheError, match="patches.npy is truncated or damaged.*rebuild=True"):
        FeatureCache(path)
    with pytest.raises(CacheError, match="truncated"):
        build(backbone, world, tmp_path)                         # no silent use of a damaged cache
    patches.write_bytes(b"garbage" + data[7:])
    with pytest.raises(CacheError, match=str(patches)):
        FeatureCache(path)
    patches.write_bytes(data[:-2] + b"\x00\x01")                 # same size, other bytes
    FeatureCache(path)                                          # sizes fit: opens
    with pytest.raises(CacheError, match="sha256"):
        FeatureCache(path, verify=True)
    (path / "attn.npy").unlink()
    with pytest.raises(CacheError, match="attn.npy is missing"):
        FeatureCache(path)
    rebuilt = build(backbone, world, tmp_path, rebuild=True)
    FeatureCache(rebuilt.path, verify=True)


def test_dataset_follows_the_training_loop_contract(backbone, world, tmp_path):
    cache = build(backbone, world, tmp_path)
    ds = cache.dataset(("patches", "attn"))
    assert isinstance(ds, CachedFeatureDataset) and len(ds) == N
    item = ds[(3, 12345)]
    assert item["index"] == 3 and item["patches"].dtype == torch.float32 and item["patches"].shape == (4, 4, 192)
    assert torch.equal(item["patches"], ds[3]["patches"])
    batches = rank_batches(len(ds), 4, seed=0, epoch=0)
    batch = next(iter(epoch_loader(ds, batches, None, 0, 0, 0)))
    assert batch["patches"].shape == (4, 4, 4, 192) and batch["attn"].shape == (4, 6, 4, 4)
    assert batch["index"].tolist() == [i for i, _ in batches[0]]
    import pickle

    clone = pickle.loads(pickle.dumps(ds))                      # DataLoader workers get a copy without the maps
    assert torch.equal(clone[2]["patches"], ds[2]["patches"])
    with pytest.raises(ValueError, match="unknown cache fields"):
        cache.dataset(("images",))
