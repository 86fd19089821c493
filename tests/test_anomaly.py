"""Anomaly scores (#19): ROC measures against brute-force counts, score kinds by
capability and against direct computations, the CLI on real MNIST."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab import cli
from vaelab.config import load_config
from vaelab.data.batches import heldout_batches
from vaelab.data.dataset import ImageDataset
from vaelab.errors import VaelabError
from vaelab.eval.anomaly import auroc, fpr_at_tpr, roc_curve, score_images, score_kinds
from vaelab.models.registry import build_model


def brute_auroc(normal, anomalous):
    pairs = [(a > b) + 0.5 * (a == b) for a in anomalous for b in normal]
    return sum(pairs) / len(pairs)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=30),
       st.lists(st.integers(0, 6), min_size=1, max_size=30))  # fmt: skip
def test_auroc_is_the_pairwise_count_with_ties_as_half(normal, anomalous):
    """Small integer scores: many ties."""
    n, a = np.array(normal, float), np.array(anomalous, float)
    assert auroc(n, a) == pytest.approx(brute_auroc(n, a), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=30),
       st.lists(st.integers(0, 6), min_size=1, max_size=30))  # fmt: skip
def test_roc_curve_against_every_threshold_and_its_area_is_the_auroc(normal, anomalous):
    n, a = np.array(normal, float), np.array(anomalous, float)
    fpr, tpr = roc_curve(n, a)
    thresholds = sorted(set(normal) | set(anomalous), reverse=True)
    expected_fpr = [0.0] + [(n >= t).mean() for t in thresholds]
    expected_tpr = [0.0] + [(a >= t).mean() for t in thresholds]
    np.testing.assert_allclose(fpr, expected_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, expected_tpr, atol=1e-12)
    assert fpr[-1] == tpr[-1] == 1.0  # the lowest threshold flags everything
    assert np.trapezoid(tpr, fpr) == pytest.approx(brute_auroc(n, a), abs=1e-12)


def test_fpr_at_tpr_against_a_brute_force_threshold_search():
    rng = np.random.default_rng(0)
    normal, anomalous = rng.integers(0, 20, 300).astype(float), rng.integers(5, 30, 200) * 1.0
    for tpr in (0.5, 0.9, 0.95, 1.0):
        best = min((normal >= t).mean() for t in np.unique(np.concatenate([normal, anomalous]))
                   if (anomalous >= t).mean() >= tpr)  # fmt: skip
        assert fpr_at_tpr(normal, anomalous, tpr) == best
    assert auroc(np.zeros(3), np.ones(2)) == 1.0 and auroc(np.ones(3), np.ones(2)) == 0.5
    with pytest.raises(VaelabError, match="needs normal and anomalous"):
        auroc(np.zeros(0), np.ones(2))


def tiny(kind, *extra):
    cfg = load_config(None, [f"model.kind={kind}", "model.widths=[16]", "model.bottleneck=2",
                             "model.image_shape=[1,4,4]", *extra])  # fmt: skip
    torch.manual_seed(0)
    return build_model(cfg.model, "bce_sum")


def test_score_kinds_follow_what_the_model_can_do_and_match_direct_computations():
    assert score_kinds(tiny("ae")) == ["mse", "bce", "relative"]  # no prior before its stage
    vae = tiny("vae")
    assert score_kinds(vae) == ["mse", "bce", "relative", "neg_elbo", "nll", "latent"]
    x = (torch.rand(6, 1, 4, 4) > 0.5).to(torch.uint8) * 255
    data = ImageDataset(x, None, [], "t")
    batches = heldout_batches(data, "none", 4)
    scores = score_images(vae, batches, ["mse", "latent", "neg_elbo", "nll", "relative"], k=50,
                          progress=False)  # fmt: skip
    xf = x.float() / 255
    with torch.no_grad():
        z = vae.encode(xf)
        mse = (vae.decode(z).clamp(1e-6, 1 - 1e-6) - xf).square().flatten(1).mean(1)
        latent = -vae.prior.log_prob(z)
    np.testing.assert_allclose(scores["mse"], mse.double().numpy(), rtol=1e-6)
    relative = mse / xf.square().flatten(1).mean(1).clamp_min(1e-12)  # the means' ratio: sums'
    np.testing.assert_allclose(scores["relative"], relative.double().numpy(), rtol=1e-5)
    np.testing.assert_allclose(scores["latent"], latent.double().numpy(), rtol=1e-6)
    assert (scores["nll"] <= scores["neg_elbo"] + 5).all()  # a bound, up to one draw's noise
    with pytest.raises(VaelabError, match="score kind 'nll' needs what this model lacks"):
        score_images(tiny("ae"), batches, ["nll"], progress=False)


CONFIG = str(Path(__file__).parents[1] / "configs" / "mnist_vae.toml")


def test_anomaly_score_cli_on_mnist(mnist_cache, tmp_path, capsys):
    """A VAE trained on 3s only (data.only_classes) scores the test images: the CSV has a
    row per image with its label; other digits score higher on average."""
    run = tmp_path / "three"
    sets = ["data.limit=0", "data.test_limit=200", "model.widths=[64]", "model.bottleneck=4",
            "train.epochs=2", 'data.only_classes=["3"]']  # fmt: skip
    assert cli.main(["train", CONFIG, "--out", str(run), "--cache", str(mnist_cache),
                     "--no-progress", *[a for s in sets for a in ("--set", s)]]) == 0  # fmt: skip
    out = tmp_path / "scores.csv"
    assert cli.main(["anomaly", "score", str(run), "mnist:test", "--limit", "400", "--k", "20",
                     "--out", str(out), "--cache", str(mnist_cache), "--no-progress"]) == 0  # fmt: skip
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 400 and {"index", "label", "mse", "neg_elbo", "nll"} <= set(rows[0])
    threes = [float(r["nll"]) for r in rows if r["label"] == "3"]
    others = [float(r["nll"]) for r in rows if r["label"] != "3"]
    assert auroc(np.array(threes), np.array(others)) > 0.8
    assert (tmp_path / "scores.png").is_file() and (tmp_path / "scores-roc.png").is_file()
    printed = capsys.readouterr().out
    assert "AUROC" in printed  # labels known: how well each kind separates, with --normal


def test_scoring_a_folder_names_each_file_and_bad_input_is_one_line(mnist_cache, tmp_path, capsys):
    from PIL import Image

    from vaelab.data.cache import load_dataset
    from vaelab.train import train

    cfg = load_config(CONFIG, ["data.limit=300", "data.test_limit=50", "model.widths=[32]",
                               "model.bottleneck=2", "train.epochs=1"])  # fmt: skip
    run = train(cfg, tmp_path / "run", cache=mnist_cache, progress=False, log=lambda s: None)
    test = load_dataset("mnist", "test", mnist_cache).limit(6)
    for i, (img, y) in enumerate(zip(test.images, test.labels, strict=True)):
        (tmp_path / "imgs" / ("odd" if y % 2 else "even")).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy()).save(tmp_path / "imgs" / ("odd" if y % 2 else "even")
                                             / f"{i}.png")  # fmt: skip
    out = tmp_path / "s.csv"
    assert cli.main(["anomaly", "score", str(run), str(tmp_path / "imgs"), "--out", str(out),
                     "--kinds", "mse,neg_elbo", "--no-progress"]) == 0  # fmt: skip
    rows = list(csv.DictReader(out.open()))
    assert [r["name"].split("/")[0] for r in rows] == sorted(r["label"] for r in rows)
    assert {r["name"] for r in rows} == {f"{'odd' if y % 2 else 'even'}/{i}.png"
                                         for i, y in enumerate(test.labels.tolist())}  # fmt: skip
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    for argv, message in [
        ([str(tmp_path / "empty")], "no images"),
        (["mnist"], "give DATASET:SPLIT, a folder or an .npz"),
        ([str(tmp_path / "imgs"), "--kinds", "latent2"], "unknown score kind 'latent2'"),
        ([str(tmp_path / "imgs"), "--out", str(tmp_path / "s.txt")], "must end in .csv"),
    ]:
        assert cli.main(["anomaly", "score", str(run), *argv, "--no-progress"]) == 1, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    np.savez(tmp_path / "big.npz", images=np.zeros((2, 8, 8), np.uint8))
    assert cli.main(["anomaly", "score", str(run), str(tmp_path / "big.npz")]) == 1
    assert "holds 1x8x8 images; the model takes 1x28x28" in capsys.readouterr().err


def test_only_classes_keeps_those_images_of_both_splits(mnist_cache):
    from vaelab.errors import ConfigError, DataError
    from vaelab.train.setup import load_splits

    cfg = load_config(None, ['data.only_classes=["3", "7"]', "data.test_limit=100"])
    train, test = load_splits(cfg, mnist_cache)
    assert {train.classes[i] for i in train.labels.unique()} == {"3", "7"}
    assert len(train) == 6131 + 6265 and len(test) == 100  # MNIST's 3s and 7s
    assert train.classes == [str(i) for i in range(10)]  # label indices keep their meaning
    with pytest.raises(DataError, match="has no class 'x'"):
        load_splits(load_config(None, ['data.only_classes=["x"]']), mnist_cache)
    # the kept images lie anywhere in their split: train and valid overlap
    with pytest.raises(ConfigError, match="share"):
        load_splits(load_config(None, ['data.only_classes=["3"]', "data.test_split=valid"]),
                    mnist_cache)  # fmt: skip


def test_calibrate_then_score_with_the_threshold(mnist_cache, tmp_path, capsys):
    """One-class on 1s: calibrate on valid's 1s at FPR 0.05, then score test images: the
    flags follow the saved threshold, the achieved FPR on held-out 1s is near the target,
    the calibration is a hashed stage file, and bad requests are one line."""
    run = tmp_path / "one"
    sets = ["data.split=train50k", "data.test_limit=100", "model.widths=[64]",
            "model.bottleneck=4", "train.epochs=2", 'data.only_classes=["1"]']  # fmt: skip
    cache = ["--cache", str(mnist_cache), "--no-progress"]
    assert cli.main(["train", CONFIG, "--out", str(run), *cache,
                     *[a for s in sets for a in ("--set", s)]]) == 0  # fmt: skip
    assert cli.main(["anomaly", "score", str(run), "mnist:test", "--calibrated", *cache]) == 1
    assert "has no calibration for" in capsys.readouterr().err
    assert cli.main(["anomaly", "calibrate", str(run), "--normal", "mnist:valid", "--fpr",
                     "0.05", *cache]) == 0  # fmt: skip
    said = capsys.readouterr().out
    assert "neg_elbo: threshold" in said and "(classes 1)" in said
    from vaelab.runs.folder import RunFolder

    state = RunFolder(run).read_state()
    assert "calibration-neg_elbo" in state["stages"]
    threshold = float(RunFolder(run).load_stage("calibration-neg_elbo", state)["threshold"])
    out = tmp_path / "s.csv"
    assert cli.main(["anomaly", "score", str(run), "mnist:test", "--kinds", "neg_elbo,mse",
                     "--calibrated", "--limit", "2000", "--out", str(out), *cache]) == 0  # fmt: skip
    said = capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert all(int(r["anomalous_neg_elbo"]) == (float(r["neg_elbo"]) > threshold) for r in rows)
    ones = [int(r["anomalous_neg_elbo"]) for r in rows if r["label"] == "1"]
    assert 0.0 <= np.mean(ones) < 0.15 and "FPR" in said and "TPR" in said
    for argv, message in [
        (["--threshold", "3", "--kinds", "mse,bce"], "--threshold applies to one score kind"),
        (["--threshold", "nan", "--kinds", "mse"], "--threshold must be a finite number"),
        (["--threshold", "3", "--calibrated", "--kinds", "mse"], "not both"),
    ]:
        assert cli.main(["anomaly", "score", str(run), "mnist:test", *argv, *cache]) == 1
        assert message in capsys.readouterr().err
    assert cli.main(["anomaly", "calibrate", str(run), "--normal", "mnist:valid", "--fpr",
                     "1.5", *cache]) == 1  # fmt: skip
    assert "--fpr must lie between 0 and 1" in capsys.readouterr().err
    # the README's flow: export a mixed folder of test images, score it with the threshold
    folder = tmp_path / "mixed"
    assert cli.main(["data", "export", "mnist:test", "--out", str(folder), "--only-classes",
                     "1,7", "--limit", "60", "--cache", str(mnist_cache)]) == 0  # fmt: skip
    assert sorted(p.name for p in folder.iterdir()) == ["1", "7"]
    out = tmp_path / "folder.csv"
    assert cli.main(["anomaly", "score", str(run), str(folder), "--kinds", "neg_elbo",
                     "--calibrated", "--out", str(out), *cache]) == 0  # fmt: skip
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 60 and all(r["name"].split("/")[0] == r["label"] for r in rows)
    sevens = np.mean([int(r["anomalous_neg_elbo"]) for r in rows if r["label"] == "7"])
    ones = np.mean([int(r["anomalous_neg_elbo"]) for r in rows if r["label"] == "1"])
    assert sevens > ones


@pytest.mark.parametrize("fmt", ["png", "npz", "idx"])
def test_data_export_round_trips_through_the_importers(mnist_cache, tmp_path, fmt):
    from vaelab.data.cache import load_dataset

    out = tmp_path / "out"
    cache = ["--cache", str(mnist_cache)]
    assert cli.main(["data", "export", "mnist:valid", "--out", str(out), "--format", fmt,
                     "--only-classes", "3,8", "--limit", "30", *cache]) == 0  # fmt: skip
    source = {"png": ["import-folder", str(out)], "npz": ["import-npz", str(out / "images.npz")],
              "idx": ["import-idx", str(out)]}[fmt]  # fmt: skip
    mine = tmp_path / "cache"
    assert cli.main(["data", *source, "--name", "back", "--cache", str(mine)]) == 0
    from vaelab.data.cache import dataset_splits

    parts = [load_dataset("back", sp, mine) for sp in dataset_splits("back", mine)
             if sp in ("train", "test")]  # fmt: skip
    images = torch.cat([p.images for p in parts])
    names = [p.classes[i] for p in parts for i in p.labels]
    valid = load_dataset("mnist", "valid", mnist_cache)
    keep = torch.isin(valid.labels, torch.tensor([3, 8]))
    want, want_names = valid.images[keep][:30], [valid.classes[i] for i in valid.labels[keep][:30]]
    assert sorted(names) == sorted(want_names)
    if fmt != "png":  # one split, in the split's order
        assert torch.equal(images, want) and names == want_names
    else:  # import-folder sorts by class and holds some out as its test split
        key = sorted(range(30), key=lambda i: want[i].flatten().tolist())
        got = sorted(range(30), key=lambda i: images[i].flatten().tolist())
        assert all(torch.equal(want[a], images[b]) for a, b in zip(key, got, strict=True))
    assert cli.main(["data", "export", "mnist:valid", "--out", str(out), *cache]) == 1


def test_reproduce_anomaly_tiny_end_to_end_and_again_from_its_files(mnist_cache, tmp_path, capsys):
    """The one-class benchmark on a tiny budget: each digit's table cell is the AUROC of that
    run's own test scores (recomputed here from its stage file and the true labels); the kind
    is chosen on valid; a second call trains and scores nothing and writes the same table."""
    from vaelab.data.batches import load_split
    from vaelab.files import read_tensors
    from vaelab.oneclass import reproduce_anomaly

    out = tmp_path / "bench"
    kwargs = dict(digits=["1", "7"], cache=mnist_cache, progress=False,
                  settings=["data.limit=200"], test_images=300)  # fmt: skip
    table = reproduce_anomaly(out, "tiny", **kwargs).read_text()
    results = json.loads((out / "auroc.json").read_text())["digits"]
    truth = load_split("mnist", "test", mnist_cache, 300).labels.numpy()
    for digit in ("1", "7"):
        test = read_tensors(out / f"digit-{digit}" / "stage-scores-test.safetensors")[0]
        assert int(test["images"]) == 300
        for kind in ("mse", "bce", "relative", "neg_elbo", "nll", "latent"):
            s, normal = test[kind].numpy(), truth == int(digit)
            assert results[digit]["test"][kind] == pytest.approx(auroc(s[normal], s[~normal]))
        chosen = results[digit]["chosen"]
        assert results[digit]["valid"][chosen] == max(results[digit]["valid"].values())
        assert f"**{100 * results[digit]['test'][chosen]:.1f}**" in table
    assert results["1"]["test"][results["1"]["chosen"]] > 0.9  # 1s apart from the rest
    assert "Deep SVDD" not in table  # the published rows need all ten digits
    assert (out / "roc.png").is_file() and (out / "digit-1" / "extremes.png").is_file()
    capsys.readouterr()
    again = reproduce_anomaly(out, "tiny", **kwargs).read_text()
    assert again.split("| normal digit")[1:] == table.split("| normal digit")[1:]
    printed = capsys.readouterr().out
    assert "already trained" in printed and "training vae" not in printed
    stage = out / "digit-7" / "stage-scores-test.safetensors"
    stage.write_bytes(stage.read_bytes()[:-8] + bytes(8))  # a damaged cache is scored anew
    third = reproduce_anomaly(out, "tiny", **kwargs).read_text()
    assert "scoring test again" in capsys.readouterr().err
    assert third.split("| normal digit")[1] == table.split("| normal digit")[1]  # same AUROCs


def test_reproduce_anomaly_cli_refusals(capsys):
    for argv, says in ((["reproduce", "anomaly", "--preset", "demo"], "does not apply"),
                       (["reproduce", "anomaly", "--full"], "does not apply"),
                       (["reproduce", "thesis", "--digits", "3"], "is an option of reproduce anomaly"),
                       (["reproduce", "anomaly", "--digits", "12"], "not a digit")):  # fmt: skip
        assert cli.main(argv) == 1
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err, err
