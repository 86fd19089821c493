"""IDX files, image folders and .npz imports (vaelab.sources)."""

import gzip

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vaelab.data.cache as data_cache
import vaelab.data.idx as data_idx
import vaelab.data.sources as data_sources
from vaelab.errors import DataError


# ---------------------------------------------------------------- IDX
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    rng = np.random.default_rng(0)
    arr = (rng.random((7, 5, 3)) * 100).astype(dtype)
    path = data_idx.write_idx(tmp_path / f"a-idx3-ubyte{suffix}", arr)
    back = data_idx.read_idx(path)
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, arr)


def test_idx_layout_is_the_published_one(tmp_path):
    path = data_idx.write_idx(tmp_path / "l", np.array([3, 1, 4], dtype=np.uint8))
    assert path.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 3, 1, 4])


def test_idx_errors_name_the_problem(tmp_path):
    good = data_idx.write_idx(tmp_path / "x", np.zeros((4, 2, 2), np.uint8)).read_bytes()
    with pytest.raises(DataError, match="truncated"):
        data_idx.parse_idx(good[:-1], "x")
    with pytest.raises(DataError, match="magic"):
        data_idx.parse_idx(b"\x01" + good[1:], "x")
    with pytest.raises(DataError, match="trailing"):
        data_idx.parse_idx(good + b"\x00", "x")
    with pytest.raises(DataError, match="data type"):
        data_idx.parse_idx(b"\x00\x00\x07\x01" + good[4:], "x")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_idx_reader_fuzz_random_bytes(blob):
    try:
        arr = data_idx.parse_idx(blob)
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
        out = data_idx.parse_idx(bytes(mutated))
    except DataError:
        return
    assert out.size * out.dtype.itemsize + 4 + 4 * out.ndim == len(mutated)


def test_read_idx_corrupt_gzip(tmp_path):
    p = tmp_path / "bad.gz"
    p.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")[:-6])
    with pytest.raises(DataError, match="bad.gz"):
        data_idx.read_idx(p)


def test_read_idx_corrupt_deflate_stream(tmp_path):
    raw = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05abcde")
    p = tmp_path / "deflate.gz"
    p.write_bytes(raw[:10] + b"\xff" * 12 + raw[-8:])  # a valid header, garbage blocks: zlib.error
    with pytest.raises(DataError, match="deflate.gz"):
        data_idx.read_idx(p)


def test_import_idx_torchvision_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    x = np.random.default_rng(0).integers(0, 256, (12, 28, 28), dtype=np.uint8)
    y = (np.arange(12) % 10).astype(np.uint8)
    data_idx.write_idx(raw / "train-images-idx3-ubyte.gz", x)
    data_idx.write_idx(raw / "train-labels-idx1-ubyte.gz", y)
    data_idx.write_idx(raw / "t10k-images-idx3-ubyte", x[:5])
    data_idx.write_idx(raw / "t10k-labels-idx1-ubyte", y[:5])
    cache = tmp_path / "cache"
    data_sources.import_idx("tv", tmp_path, cache=cache)
    train = data_cache.load_dataset("tv", "train", cache)
    assert train.images.shape == (12, 1, 28, 28) and np.array_equal(train.images[:, 0].numpy(), x)
    assert train.labels.tolist() == y.tolist()
    assert len(data_cache.load_dataset("tv", "test", cache)) == 5


def test_import_idx_emnist_layout(tmp_path):
    """EMNIST's names (emnist-SET-train-…, -test-), torchvision's plain-and-.gz pairs as one
    file, a folder of several sets refused with the way out, --transpose, and LABELS or
    --split with a folder refused (they were silently ignored)."""
    x = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    y = np.arange(6, dtype=np.uint8)
    one = tmp_path / "one"
    one.mkdir()
    for split, n in (("train", 6), ("test", 3)):
        data_idx.write_idx(one / f"emnist-digits-{split}-images-idx3-ubyte.gz", x[:n])
        data_idx.write_idx(one / f"emnist-digits-{split}-labels-idx1-ubyte.gz", y[:n])
    data_idx.write_idx(one / "emnist-digits-train-images-idx3-ubyte", x)  # unpacked beside
    cache = tmp_path / "cache"
    data_sources.import_idx("em", one, cache=cache, transpose=True)
    train = data_cache.load_dataset("em", "train", cache)
    assert np.array_equal(train.images[:, 0].numpy(), x.transpose(0, 2, 1))
    assert (
        train.labels.tolist() == y.tolist()
        and len(data_cache.load_dataset("em", "test", cache)) == 3
    )
    data_idx.write_idx(one / "emnist-letters-train-images-idx3-ubyte.gz", x)
    with pytest.raises(DataError, match=r"several data sets \(emnist-digits-train.*emnist-letters"):
        data_sources.import_idx("em2", one, cache=cache)
    with pytest.raises(DataError, match="is a folder: .*LABELS and --split"):
        data_sources.import_idx(
            "em3", one, one / "emnist-digits-train-labels-idx1-ubyte.gz", cache=cache
        )
    with pytest.raises(DataError, match="is a folder"):
        data_sources.import_idx("em3", one, split="test", cache=cache)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    data_idx.write_idx(mixed / "emnist-digits-train-images-idx3-ubyte", x)
    data_idx.write_idx(mixed / "emnist-letters-test-images-idx3-ubyte", x)
    with pytest.raises(DataError, match="belong to different data sets"):
        data_sources.import_idx("em4", mixed, cache=cache)


def test_import_idx_names_emnist_classes_from_its_mapping(tmp_path):
    """emnist-SET-mapping.txt names the labels by their characters (letters: both cases;
    its unused label 0 keeps its number); a garbled mapping is named, not a traceback."""
    x = np.zeros((4, 28, 28), dtype=np.uint8)
    folder = tmp_path / "em"
    folder.mkdir()
    for split in ("train", "test"):
        data_idx.write_idx(folder / f"emnist-letters-{split}-images-idx3-ubyte", x)
        data_idx.write_idx(folder / f"emnist-letters-{split}-labels-idx1-ubyte",
                          np.array([1, 2, 3, 2], np.uint8))  # fmt: skip
    mapping = folder / "emnist-letters-mapping.txt"
    mapping.write_text("1 65 97\n2 66 98\n3 67 99\n4 68 100\n")
    cache = tmp_path / "cache"
    data_sources.import_idx("letters", folder, cache=cache)
    test = data_cache.load_dataset("letters", "test", cache)
    # the splits hold labels up to 3, the mapping goes to 4: both splits name all five
    assert test.classes == ["0", "Aa", "Bb", "Cc", "Dd"] and test.labels.tolist() == [1, 2, 3, 2]
    for garbled in ("0 48\n1 x\n", "1 99999999999999999999\n"):
        mapping.write_text(garbled)
        with pytest.raises(DataError, match="emnist-letters-mapping.txt: not an EMNIST mapping"):
            data_sources.import_idx("letters2", folder, cache=cache)
    mapping.write_text("1 65\n2 65\n3 67\n")
    with pytest.raises(DataError, match="gives two labels the same name"):
        data_sources.import_idx("letters3", folder, cache=cache)


def test_import_idx_label_count_mismatch(tmp_path):
    data_idx.write_idx(tmp_path / "i", np.zeros((3, 2, 2), np.uint8))
    data_idx.write_idx(tmp_path / "l", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="4,"):
        data_sources.import_idx("m", tmp_path / "i", tmp_path / "l", cache=tmp_path)


def test_import_idx_of_swapped_image_and_label_files_says_so(tmp_path):
    data_idx.write_idx(tmp_path / "i", np.zeros((3, 2, 2), np.uint8))
    data_idx.write_idx(tmp_path / "l", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="image and label files are swapped"):
        data_sources.import_idx("m", tmp_path / "l", tmp_path / "i", cache=tmp_path)


@pytest.mark.parametrize("labels", [[255] * 4, [0, 1, 2, 300], [0, 100, 200, 40]])
def test_unnamed_labels_that_leave_most_classes_empty_are_refused(tmp_path, labels):
    """Labels all 255 made 256 classes with 255 of them empty."""
    data_idx.write_idx(tmp_path / "i", np.zeros((4, 2, 2), np.uint8))
    data_idx.write_idx(tmp_path / "l", np.array(labels, np.int32))
    with pytest.raises(DataError, match="classes .* would be empty"):
        data_sources.import_idx("m", tmp_path / "i", tmp_path / "l", cache=tmp_path / "c")
    # named classes and labels 0..9 with one class missing are fine
    data_idx.write_idx(tmp_path / "l", np.array([0, 2, 9, 9], np.int32))
    data_sources.import_idx("n", tmp_path / "i", tmp_path / "l", cache=tmp_path / "c")
    assert len(data_cache.load_dataset("n", "train", tmp_path / "c").classes) == 10


def test_import_idx_classes_txt_that_is_not_utf8_is_named(tmp_path):
    data_idx.write_idx(tmp_path / "i", np.zeros((2, 2, 2), np.uint8))
    data_idx.write_idx(tmp_path / "l", np.array([0, 1], np.uint8))
    (tmp_path / "classes.txt").write_bytes("café\nthé\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"classes.txt: not UTF-8 text"):
        data_sources.import_idx("m", tmp_path / "i", tmp_path / "l", cache=tmp_path / "c")


def test_import_folder_labels_and_resize(tmp_path):
    from PIL import Image

    for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 30), colour).save(tmp_path / "imgs" / cls / f"{i}.png")
    Image.new("L", (10, 10), 7).save(tmp_path / "imgs" / "dog" / "x.jpg")
    (tmp_path / "imgs" / "dog" / "._x.png").write_bytes(b"macOS resource fork")  # skipped
    ds = data_sources.folder_dataset(tmp_path / "imgs", (16, 12), channels=3)
    assert ds.images.shape == (7, 3, 16, 12) and ds.classes == ["cat", "dog"]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert ds.images[0, 0].float().mean() > 250 and ds.images[0, 2].float().mean() < 5
    grey = data_sources.folder_dataset(tmp_path / "imgs", (8, 8), channels=1)
    assert grey.images.shape == (7, 1, 8, 8)


def test_import_folder_splits_share_one_class_list(tmp_path):
    """test/ without a dog folder: its foxes must still be label 2, not 'dog'; hidden
    folders are no class."""
    from PIL import Image

    for split, names in (("train", ("cat", "dog", "fox")), ("test", ("cat", "fox", ".ipynb_checkpoints"))):  # fmt: skip
        for k, cls in enumerate(names):
            (tmp_path / "imgs" / split / cls).mkdir(parents=True)
            Image.new("L", (8, 8), 10 * k).save(tmp_path / "imgs" / split / cls / "0.png")
    cache = tmp_path / "cache"
    data_sources.import_folder("pets", tmp_path / "imgs", (8, 8), 1, cache)
    train, test = (data_cache.load_dataset("pets", s, cache) for s in ("train", "test"))
    assert train.classes == test.classes == ["cat", "dog", "fox"]
    assert [test.classes[k] for k in test.labels] == ["cat", "fox"]
    (tmp_path / "imgs" / "test" / "bad\udcffname").mkdir()  # undecodable bytes in a name
    with pytest.raises(DataError, match="must be printable UTF-8"):
        data_sources.folder_dataset(tmp_path / "imgs" / "test", (8, 8))
    (tmp_path / "imgs" / "test" / "bad\udcffname").rmdir()
    # one folder of class folders, no train/ and test/: a seeded 10 % becomes the test split
    flat = tmp_path / "imgs" / "train"
    data_sources.import_folder("flat", flat, (8, 8), 1, cache, test_fraction=0.34)
    tr, te = (data_cache.load_dataset("flat", s, cache) for s in ("train", "test"))
    assert len(tr) == 2 and len(te) == 1 and tr.classes == te.classes == ["cat", "dog", "fox"]
    with pytest.raises(DataError, match="too few"):
        data_sources.import_folder("flat2", tmp_path / "imgs" / "test" / "cat", (8, 8), 1, cache)
    with pytest.raises(DataError, match="use --force"):
        data_sources.import_folder("flat", flat, (8, 8), 1, cache)
    # --force replaces the whole data set: no old test split is left beside the new train
    data_sources.import_folder("flat", flat, (8, 8), 1, cache, test_fraction=0, replace=True)
    assert data_cache.dataset_splits("flat", cache) == ["train"]
    with pytest.raises(DataError, match=r"sub-folders \['fox'\] are not among the classes"):
        data_sources.folder_dataset(tmp_path / "imgs" / "test", (8, 8), classes=["cat"])


def test_import_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        data_sources.folder_dataset(tmp_path / "empty", (8, 8))
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        data_sources.folder_dataset(tmp_path / "bad", (8, 8))
    with pytest.raises(DataError, match="not a folder"):
        data_sources.folder_dataset(tmp_path / "missing", (8, 8))


def test_npz_import(tmp_path):
    x = np.random.default_rng(1).integers(0, 256, (6, 5, 5, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=x, labels=np.arange(6))
    data_sources.import_npz("d", tmp_path / "d.npz", cache=tmp_path / "c")
    ds = data_cache.load_dataset("d", "train", tmp_path / "c")
    assert ds.images.shape == (6, 3, 5, 5)
    assert np.array_equal(ds.images.permute(0, 2, 3, 1).numpy(), x)
    np.savez(tmp_path / "bad.npz", pictures=x)
    with pytest.raises(DataError, match="no 'images'"):
        data_sources.read_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "f.npz", images=x.astype(np.float32))
    with pytest.raises(DataError, match="uint8"):
        data_sources.read_npz(tmp_path / "f.npz")
    np.savez(tmp_path / "neg.npz", images=x, labels=np.array([0, 1, -2, 0, 1, 0]))
    with pytest.raises(DataError, match=r"neg.npz.*>= 0"):
        data_sources.read_npz(tmp_path / "neg.npz")
    np.savez(tmp_path / "k.npz", images=x, labels=np.arange(6), classes=np.array(["a", "b"]))
    with pytest.raises(DataError, match=r"k.npz.*label 5 but only 2 class names"):
        data_sources.read_npz(tmp_path / "k.npz")


def test_npz_shapes_and_files_that_are_not_npz(tmp_path):
    """Channels-first arrays are refused with the transpose to use (they read as 28
    channels of 1x28); a .npy is named as one bare array; byte-string class names are
    decoded, not written as "b'cat'"."""
    x = np.zeros((5, 1, 28, 28), np.uint8)
    np.savez(tmp_path / "chw.npz", images=x)
    with pytest.raises(DataError, match=r"channels-first .*transpose\(0, 2, 3, 1\)"):
        data_sources.read_npz(tmp_path / "chw.npz")
    np.save(tmp_path / "x.npy", x[:, 0])
    with pytest.raises(DataError, match=r"x.npy: one bare array, not an .npz"):
        data_sources.read_npz(tmp_path / "x.npy")
    np.savez(tmp_path / "b.npz", images=x[:2, 0], labels=np.arange(2),
             classes=np.array([b"cat", b"dog"]))  # fmt: skip
    assert data_sources.read_npz(tmp_path / "b.npz").classes == ["cat", "dog"]


def test_import_folder_of_16_bit_images(tmp_path):
    """16-bit grey images are scaled 65535 -> 255 (Pillow's convert clips them to white);
    float images are refused by name."""
    from PIL import Image

    (tmp_path / "deep" / "a").mkdir(parents=True)
    ramp = np.arange(16, dtype=np.uint16).reshape(4, 4) * 4369  # 0 … 65535
    Image.fromarray(ramp).save(tmp_path / "deep" / "a" / "0.png")
    assert Image.open(tmp_path / "deep" / "a" / "0.png").mode == "I;16"
    ds = data_sources.folder_dataset(tmp_path / "deep", (4, 4))
    assert ds.images[0, 0].flatten().tolist() == [17 * k for k in range(16)]  # 4369 k / 257
    (tmp_path / "float" / "a").mkdir(parents=True)
    Image.fromarray(ramp.astype(np.float32)).save(tmp_path / "float" / "a" / "0.tif")
    with pytest.raises(DataError, match=r"0.tif: a floating-point image"):
        data_sources.folder_dataset(tmp_path / "float", (4, 4))


def test_an_npz_path_is_not_a_data_set_name(tmp_path, monkeypatch):
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 3, 3), np.uint8))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="invalid data set name"):
        data_cache.load_dataset(str(tmp_path / "d.npz"), cache=tmp_path / "cache")
    with pytest.raises(DataError, match="no data set named 'd.npz'"):
        data_cache.load_dataset("d.npz", cache=tmp_path / "cache")


def test_parse_size():
    assert data_sources.parse_size("28x32") == (28, 32) and data_sources.parse_size("7") == (7, 7)
    with pytest.raises(DataError, match="invalid size"):
        data_sources.parse_size("axb")
