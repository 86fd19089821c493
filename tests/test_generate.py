"""Composed digits, the classifier judge, conditional generation, export and import."""

import numpy as np
import pytest
import torch

import vaelab.data.cache as data_cache
import vaelab.data.dataset as data_dataset
import vaelab.data.sources as data_sources
import vaelab.train.loop as train_loop
from vaelab import cli
from vaelab.config import load_config
from vaelab.data.compose import compose_digits, default_holdout
from vaelab.errors import ConfigError, DataError, VaelabError
from vaelab.eval.generation import frechet_distance, generation_metrics, nearest_distance
from vaelab.generate import export, load_generator
from vaelab.runs.load import load_run


def test_compose_places_the_labelled_digits(mnist_small):
    source, _ = mnist_small
    comp = compose_digits(source, 3, 50, seed=4, scale=(1.0, 1.0), jitter=0.0)
    assert comp.images.shape == (50, 1, 28, 84) and len(comp.classes) == 1000
    flat_source = source.images.flatten(1)
    for img, k in zip(comp.images, comp.labels, strict=True):
        for slot, digit in enumerate(comp.classes[k]):
            tile = img[:, :, slot * 28 : (slot + 1) * 28].flatten()
            match = (flat_source == tile).all(1).nonzero().flatten()
            assert len(match) and int(source.labels[match[0]]) == int(digit)
    # digits are found by class name: the same images under classes listed "9" … "0"
    # (label k is now the digit 9 − k) still put digit d where the number says d
    flipped = data_dataset.ImageDataset(source.images, 9 - source.labels, [str(9 - d) for d in range(10)],
                                "flipped")  # fmt: skip
    again = compose_digits(flipped, 3, 50, seed=4, scale=(1.0, 1.0), jitter=0.0)
    assert torch.equal(again.images, comp.images) and torch.equal(again.labels, comp.labels)
    letters = data_dataset.ImageDataset(source.images, source.labels, list("abcdefghij"), "letters")
    with pytest.raises(DataError, match="has no class '0', '1'"):
        compose_digits(letters, 2, 10, seed=0)


def test_compose_is_deterministic_and_holds_out(mnist_small):
    source, _ = mnist_small
    holdout = ["123", "456"]
    a = compose_digits(source, 3, 3000, seed=1, holdout=holdout)
    b = compose_digits(source, 3, 3000, seed=1, holdout=holdout)
    c = compose_digits(source, 3, 3000, seed=2, holdout=holdout)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert not {"123", "456"} & {a.classes[k] for k in a.labels}
    assert default_holdout(3, 0) == default_holdout(3, 0) and len(default_holdout(3, 0)) == 10
    with pytest.raises(DataError, match="cover every 1-digit number"):
        compose_digits(source, 1, 10, seed=0, holdout=[str(d) for d in range(10)])
    with pytest.raises(DataError, match="composites must be >= 1, got 0"):
        compose_digits(source, 2, 0, seed=0)


def test_compose_a_tiny_set_still_has_a_test_split(mnist_cache, tmp_path):
    from vaelab.data.compose import compose_dataset

    _cache_with_mnist(mnist_cache, tmp_path)
    compose_dataset("tiny2", digits=2, n=5, cache=tmp_path)  # 5 // 6 test images was 0
    assert len(data_cache.load_dataset("tiny2", "test", tmp_path)) == 1


def _cache_with_mnist(mnist_cache, folder):
    """A cache of its own with MNIST linked in, so tests never write into a shared one."""
    (folder / "datasets").mkdir(parents=True)
    (folder / "datasets" / "mnist.npz").symlink_to(mnist_cache / "datasets" / "mnist.npz")
    return folder


def test_compose_dataset_cli(mnist_cache, tmp_path, capsys):
    cache = _cache_with_mnist(mnist_cache, tmp_path)
    args = ["data", "compose", "--digits", "2", "--n", "600", "--n-test", "1000", "--holdout", "42,07",
            "--name", "mnist2", "--cache", str(cache)]  # fmt: skip
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "600 images of 1x28x56" in out and "holdout: ['42', '07']" in out
    train_split = data_cache.load_dataset("mnist2", "train", cache)
    assert not {"42", "07"} & {train_split.classes[k] for k in train_split.labels}
    # the test split draws from every number, held-out ones included: what they are for
    # (1,000 draws of 100 numbers miss one of two with probability 2·0.99¹⁰⁰⁰ ≈ 9e-5)
    test_split = data_cache.load_dataset("mnist2", "test", cache)
    assert {"42", "07"} <= {test_split.classes[k] for k in test_split.labels}
    # a data set is never replaced by accident, and the source never
    before = (cache / "datasets" / "mnist2.npz").read_bytes()
    assert cli.main([*args[:-6], "--holdout", "11", "--name", "mnist2", "--cache", str(cache)]) == 1
    assert "already exists; use --force" in capsys.readouterr().err
    assert (cache / "datasets" / "mnist2.npz").read_bytes() == before
    assert cli.main([*args[:-4], "--name", "mnist", "--cache", str(cache), "--force"]) == 1
    assert "would overwrite the source" in capsys.readouterr().err
    assert (
        cli.main(
            [*args[:-6], "--holdout", "11", "--name", "mnist2", "--cache", str(cache), "--force"]
        )
        == 0
    )
    assert data_cache._load_meta("mnist2", cache)["extra"]["holdout"] == ["11"]


def test_classifier_train_keeps_set_unless_an_option_is_given(mnist_cache, tmp_path):
    from vaelab.runs.folder import RunFolder

    tiny = ["--set", "data.limit=200", "--set", "data.test_limit=100", "--cache", str(mnist_cache),
            "--no-progress"]  # fmt: skip
    for extra, epochs in [(["--set", "train.epochs=1"], 1), (["--set", "train.epochs=1", "--epochs", "2"], 2)]:  # fmt: skip
        out = tmp_path / f"run{epochs}"
        assert cli.main(["classifier", "train", "--out", str(out), *tiny, *extra]) == 0
        assert len(RunFolder(out).read_metrics()) == epochs


@pytest.fixture(scope="module")
def classifier(mnist_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("clf") / "run"
    args = ["classifier", "train", "--epochs", "2", "--set", "data.limit=3000", "--set", "train.batch_size=32", "--set",
            "data.test_limit=1000", "--out", str(out), "--cache", str(mnist_cache), "--no-progress"]  # fmt: skip
    assert cli.main(args) == 0
    return out


def test_classifier_learns_quickly(classifier):
    import json

    result = json.loads((classifier / "eval.json").read_text())[-1]
    assert result["accuracy"] > 0.9  # 3,000 images, 2 epochs; the full schedule is in benchmarks


@pytest.mark.parametrize(
    "figure", ["latent", "recon", "samples", "manifold", "interpolate", "traverse"]
)
def test_latent_figures_of_a_classifier_are_one_line_errors(
    classifier, mnist_cache, capsys, figure
):
    argv = ["plot", str(classifier), figure, "--cache", str(mnist_cache)]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "holds a classifier" in err and "Traceback" not in err


def test_classifier_reads_composites(classifier, mnist_small):
    _, clf = load_run(classifier)
    _, test = mnist_small
    comp = compose_digits(test, 3, 300, seed=0, scale=(1.0, 1.0), jitter=0.0)
    read = clf.read(comp.images.float() / 255)
    truth = torch.tensor([[int(ch) for ch in comp.classes[k]] for k in comp.labels])
    assert (read == truth).float().mean() > 0.85
    # images the classifier was not trained for are refused by name, not by torch
    assert clf.read(torch.rand(0, 1, 28, 84)).shape == (0, 3)
    for shape in [(2, 1, 32, 84), (2, 3, 28, 84), (2, 1, 28, 30), (1, 28, 28)]:
        with pytest.raises(ConfigError, match="cannot read images of shape"):
            clf.read(torch.rand(shape))


@pytest.fixture(scope="module")
def cvae(mnist_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("cvae") / "run"
    cfg = load_config(None, ["model.kind=vae", "model.conditional=true", "model.widths=[256,128]",
                             "model.bottleneck=8", "data.limit=6000", "data.test_limit=500",
                             "data.binarize=dynamic", "train.epochs=4", "train.batch_size=100",
                             "train.lr=1e-3"])  # fmt: skip
    return train_loop.train(cfg, out, cache=mnist_cache, progress=False, log=lambda s: None)


def test_cvae_generates_the_requested_digits(cvae, classifier, mnist_cache):
    rows = generation_metrics(cvae, classifier, n=500, cache=mnist_cache)
    model_row = rows["vae (conditional)"]
    assert model_row["label_accuracy"] > 0.5  # chance is 0.1
    assert rows["real test"]["frechet"] < model_row["frechet"]
    assert 0 < model_row["class_entropy"] <= np.log(10) + 1e-9


def brightness_classifier(classes):
    """A classifier of 4x4 tiles whose class probabilities are a known function of the
    tile's brightness: dark -> classes[0], mid -> classes[1], bright -> classes[2]."""
    from torch import nn

    from vaelab.models.classifier import Classifier

    head = nn.Linear(1, 3)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[-8.0], [0.0], [8.0]]))
        head.bias.copy_(torch.tensor([4.0, 0.0, -4.0]))
    brightness = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    with torch.no_grad():
        brightness[1].weight.fill_(1 / 16)
        brightness[1].bias.zero_()
    return Classifier(brightness, head, classes, (1, 4, 4))


def test_judge_metrics_against_torch_distributions():
    """Class entropy, inception score and label / digit accuracy of the brightness
    classifier against direct formulas."""
    from torch import distributions as D

    from vaelab.eval.generation import judge

    clf = brightness_classifier(["0", "1", "2"])
    g = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 256, (40, 2), generator=g, dtype=torch.uint8)  # (N, slots)
    images = levels[:, None, None, :, None].expand(40, 1, 4, 2, 4).reshape(40, 1, 4, 8)
    tiles = levels.flatten().double() / 255  # brightness of each tile, slot by slot
    probs = torch.softmax(torch.stack([4 - 8 * tiles, 0 * tiles, 8 * tiles - 4], 1), 1)  # (80, 3)
    p_y = probs.mean(0)
    read = probs.argmax(1).reshape(40, 2)
    labels = ["".join(str(int(k)) for k in row) for row in read]
    labels[:10] = ["".join("2" if ch == "0" else "0" for ch in t) for t in labels[:10]]  # wrong
    feats = torch.randn(50, 1, generator=g, dtype=torch.float64)
    row = judge(clf, images, labels, feats, torch.rand(5, 1, 4, 8))
    assert row["class_entropy"] == pytest.approx(
        float(D.Categorical(probs=p_y).entropy()), rel=1e-5
    )
    kl = D.kl_divergence(D.Categorical(probs=probs), D.Categorical(probs=p_y))
    assert row["inception_score"] == pytest.approx(float(kl.mean().exp()), rel=1e-5)
    assert row["label_accuracy"] == pytest.approx(30 / 40)
    wrong_digits = sum(ch != "1" for t in labels[:10] for ch in t)  # '1' maps to itself
    assert row["digit_accuracy"] == pytest.approx(1 - wrong_digits / 80)


def test_judge_names_of_different_lengths():
    """Class names that are not digit strings ("cat" read as "bird"): label accuracy, and no
    digit accuracy, which has no digits to compare (it was a zip error)."""
    from vaelab.eval.generation import judge

    clf = brightness_classifier(["cat", "dog", "bird"])
    images = torch.tensor([0, 255, 255, 0], dtype=torch.uint8)[:, None, None, None]
    images = images.expand(4, 1, 4, 4).contiguous()  # dark, bright, bright, dark
    feats = torch.randn(8, 1, dtype=torch.float64)
    row = judge(clf, images, ["cat", "bird", "dog", "cat"], feats, images.float() / 255)
    assert row["label_accuracy"] == pytest.approx(3 / 4) and "digit_accuracy" not in row
    # by label: cat 2/2, bird 1/1, dog 0/1 (the bright image is read as bird)
    assert row["worst_label_accuracy"] == 0.0


def test_generate_and_import_npz_cli(cvae, tmp_path, mnist_cache, capsys):
    """`vaelab generate` passes its options to export (same arrays as calling it), and
    `vaelab data import-npz` reads them back unchanged."""
    args = ["generate", str(cvae), "--out", str(tmp_path / "cli"), "--per-label", "2", "--labels", "1,5",
            "--format", "npz", "--seed", "3", "--temperature", "0.7", "--cache", str(mnist_cache)]  # fmt: skip
    assert cli.main(args) == 0
    _, model = load_generator(cvae, mnist_cache)
    direct = export(model, tmp_path / "direct", per_label=2, labels=["1", "5"], fmt="npz", seed=3,
                    temperature=0.7)  # fmt: skip
    assert cli.main(args) == 1  # onto the folder it filled: refused, nothing mixed in
    assert "is not empty" in capsys.readouterr().err
    with np.load(tmp_path / "cli" / "generated.npz") as a, np.load(direct / "generated.npz") as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
        images, labels = a["images"], a["labels"]
    cache = tmp_path / "cache"
    argv = ["data", "import-npz", str(tmp_path / "cli" / "generated.npz"), "--name", "g", "--cache", str(cache)]  # fmt: skip
    assert cli.main(argv) == 0
    back = data_cache.load_dataset("g", "train", cache)
    assert np.array_equal(back.images.permute(0, 2, 3, 1).numpy(), images)
    assert [back.classes[k] for k in back.labels] == ["1", "1", "5", "5"]
    assert back.labels.tolist() == labels.tolist()


def test_eval_generation_cli_rows_per_temperature(cvae, classifier, mnist_cache, capsys):
    import json

    argv = ["eval", str(cvae), "--generation", "--classifier", str(classifier), "-n", "60",
            "--temperatures", "0.5,1", "--cache", str(mnist_cache)]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "vae (conditional), T=0.5" in out and "real test" in out
    record = json.loads((cvae / "eval.json").read_text())[-1]
    assert set(record["generation"]) == {
        "real test",
        "vae (conditional)",
        "vae (conditional), T=0.5",
    }
    assert all(row["n"] == 60 for row in record["generation"].values())
    assert cli.main([*argv[:-4], "--temperatures", "0,1", "--cache", str(mnist_cache)]) == 1
    assert "--temperatures must be finite numbers > 0" in capsys.readouterr().err
    assert cli.main([*argv[:-4], "--temperatures", "nan", "--cache", str(mnist_cache)]) == 1
    capsys.readouterr()
    # the options of the other mode are refused rather than ignored
    assert cli.main([*argv, "--k", "100"]) == 1
    assert "--k applies to the likelihood evaluation only" in capsys.readouterr().err
    assert cli.main([*argv, "--k", "5000"]) == 1  # also when the value given is the default
    assert "--k applies to the likelihood evaluation only" in capsys.readouterr().err
    assert cli.main(["eval", str(cvae), "--labels", "3", "--cache", str(mnist_cache)]) == 1
    assert "--labels applies to --generation only" in capsys.readouterr().err
    assert cli.main([*argv, "--max-rows", "64"]) == 1
    assert "--max-rows applies to the likelihood evaluation only" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("fmt", "name"), [("png", "../evil"), ("png", ".."), ("png", "a\\b"), ("idx", "two\nlines")]
)
def test_export_refuses_class_names_it_cannot_write_safely(tmp_path, fmt, name):
    from types import SimpleNamespace

    from vaelab.errors import VaelabError

    model = SimpleNamespace(classes=["ok", name])  # refused before anything is generated
    with pytest.raises(VaelabError, match="folder names|one name per line"):
        export(model, tmp_path / "out", per_label=1, labels=None, fmt=fmt)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "out").exists()


def test_sample_by_label_cli(cvae, tmp_path, mnist_cache):
    out = tmp_path / "sevens.png"
    assert cli.main(["sample", str(cvae), "--label", "7", "-n", "16", "--out", str(out)]) == 0
    assert out.exists()
    assert cli.main(["sample", str(cvae), "--label", "x", "--out", str(out)]) == 1
    assert cli.main(["sample", str(cvae), "-n", "4"]) == 0  # default: beside the run
    assert (cvae / "sample-grid.png").exists()
    npz = tmp_path / "two.npz"
    assert (
        cli.main(
            ["sample", str(cvae), "--label", "3,7", "-n", "4", "--npz", str(npz), "--out", str(out)]
        )
        == 0
    )
    from vaelab.generate import generate

    _, model = load_generator(cvae, mnist_cache)
    cycled = generate(model, 4, ["3", "7", "3", "7"], 0).permute(0, 2, 3, 1).numpy()
    with np.load(npz) as f:
        assert np.array_equal(f["images"], cycled)


@pytest.mark.parametrize("fmt", ["png", "npz", "idx"])
def test_export_import_round_trip(cvae, tmp_path, mnist_cache, fmt):
    _, model = load_generator(cvae, mnist_cache)
    out = export(model, tmp_path / "gen", per_label=3, labels=["1", "5"], fmt=fmt, seed=0)
    cache = tmp_path / "cache"
    if fmt == "png":
        data_sources.import_folder("g", out, (28, 28), 1, cache, test_fraction=0)
    elif fmt == "npz":
        data_sources.import_npz("g", out / "generated.npz", cache=cache)
    else:
        data_sources.import_idx(
            "g", out / "images-idx3-ubyte.gz", out / "labels-idx1-ubyte.gz", cache=cache
        )
    back = data_cache.load_dataset("g", "train", cache)
    assert back.images.shape == (6, 1, 28, 28)
    names = [back.classes[k] for k in back.labels]
    assert names == ["1", "1", "1", "5", "5", "5"]  # idx: from classes.txt
    if fmt == "idx":
        idx = (out / "images-idx3-ubyte.gz", out / "labels-idx1-ubyte.gz")
        (out / "classes.txt").write_text("one\x0cthing\n5\n")  # only \n ends a name
        data_sources.import_idx("f", *idx, cache=cache)
        assert data_cache.load_dataset("f", "train", cache).classes == ["one\x0cthing", "5"]
        (out / "classes.txt").write_bytes(b"1\r\n5\r\n")  # written on Windows
        data_sources.import_idx("w", *idx, cache=cache)
        assert data_cache.load_dataset("w", "train", cache).classes == ["1", "5"]
        (out / "classes.txt").write_text("1\n")
        with pytest.raises(DataError, match="names 1 classes, but .* has label 1"):
            data_sources.import_idx("h", *idx, cache=cache)


def test_frechet_and_nearest_distance_references():
    torch.manual_seed(0)
    a = torch.randn(4000, 3, dtype=torch.float64)
    b = torch.randn(4000, 3, dtype=torch.float64) * 2 + 1
    # closed form for N(0, I) vs N(1, 4I): |μ|² + tr(I + 4I − 2·2I) = 3 + 3 = 6
    assert abs(frechet_distance(a, b) - 6.0) < 0.5
    assert frechet_distance(a, a) < 1e-6
    # full, non-commuting covariances: Tr((Σa^½ Σb Σa^½)^½) from eigh, the same samples
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3000, 4, generator=g, dtype=torch.float64) @ torch.randn(
        4, 4, generator=g, dtype=torch.float64
    )
    b = (
        torch.randn(3000, 4, generator=g, dtype=torch.float64)
        @ torch.randn(4, 4, generator=g, dtype=torch.float64)
        + 0.5
    )
    ca, cb = torch.cov(a.T), torch.cov(b.T)

    def sqrtm(m):
        w, v = torch.linalg.eigh(m)
        return v @ torch.diag(w.clamp(min=0).sqrt()) @ v.T

    ra = sqrtm(ca)
    exact = (
        (a.mean(0) - b.mean(0)).square().sum()
        + ca.trace()
        + cb.trace()
        - 2 * sqrtm(ra @ cb @ ra).trace()
    )
    assert frechet_distance(a, b) == pytest.approx(float(exact), abs=1e-8)  # fmt: skip
    ref = torch.rand(50, 1, 4, 4)
    d = nearest_distance(torch.cat([ref[:5], ref[:5] + 0.1]), ref)
    # float32 expansion |q|² − 2q·r + |r|²: exact copies come out within ~1e-3
    torch.testing.assert_close(d[:5], torch.zeros(5), atol=5e-3, rtol=0)
    q = torch.rand(30, 1, 4, 4)  # not near-copies: every distance against the brute force
    brute = torch.cdist(q.flatten(1).double(), ref.flatten(1).double()).min(1).values
    torch.testing.assert_close(nearest_distance(q, ref, batch=7).double(), brute, atol=1e-4, rtol=0)


def test_temperature_scales_the_prior(cvae):
    _, model = load_run(cvae)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    cold = model.sample(8, ["3"], generator=g(), temperature=0.0)
    assert torch.allclose(cold, cold[:1].expand_as(cold))  # T = 0: every draw is z = 0
    warm = model.sample(8, ["3"], generator=g(), temperature=1.0)
    assert not torch.allclose(warm, warm[:1].expand_as(warm))
    # z ~ N(0, T² I): the same draws, scaled by T, through the decoder
    z = torch.randn(8, model.latent_dim, generator=g())
    c = model.condition_of(["3"] * 8)
    torch.testing.assert_close(
        model.sample(8, ["3"], generator=g(), temperature=0.5), model.decode(0.5 * z, c)
    )


def test_generate_passes_names_generator_and_temperature_batch_by_batch():
    """Across batches: the names in order (or one name for all), one generator stream, and
    the temperature."""
    from vaelab.generate import generate

    calls = []

    class Stub:
        def sample(self, m, names, generator, temperature):
            calls.append((m, names, generator, temperature))
            return torch.zeros(m, 1, 2, 2)

    out = generate(Stub(), 7, list("abcdefg"), seed=3, batch=3, temperature=0.7)
    assert out.shape == (7, 1, 2, 2) and out.dtype == torch.uint8
    assert [c[1] for c in calls] == [list("abc"), list("def"), ["g"]]
    assert len({id(c[2]) for c in calls}) == 1 and {c[3] for c in calls} == {0.7}
    calls.clear()
    generate(Stub(), 5, ["x"], batch=2)
    assert [c[1] for c in calls] == [["x", "x"], ["x", "x"], ["x"]]
    # labels neither one nor one per image, and no images, are refused before sampling
    calls.clear()
    with pytest.raises(VaelabError, match="1001 labels for 2000 images"):
        generate(Stub(), 2000, ["a"] * 1001)
    with pytest.raises(VaelabError, match="cannot generate 0 images"):
        generate(Stub(), 0)
    assert calls == []


def test_export_draws_all_labels_from_one_stream(tmp_path):
    """Label i of an export does not reuse the draws of another export's label j (as seeds
    seed + i did): the export is generate() over its labels in order, from one seed."""
    from vaelab.generate import generate

    class Stub:
        classes = ["a", "b"]

        def sample(self, m, names, generator, temperature):
            return torch.rand(m, 1, 1, 1, generator=generator)  # (m, 1, 1, 1): the draws

    out = export(Stub(), tmp_path / "e", per_label=3, labels=None, fmt="npz", seed=0)
    with np.load(out / "generated.npz") as f:
        images = f["images"]
    direct = generate(Stub(), 6, ["a"] * 3 + ["b"] * 3, seed=0)
    assert np.array_equal(images, direct.permute(0, 2, 3, 1).numpy())
    assert len(np.unique(images)) == 6  # no draw repeats across the two labels
