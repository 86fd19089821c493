"""`vaelab reproduce models` (#23) on a tiny budget: the table's columns come from the
models (recomputed here independently), a broken sampler shows up as a worse Fréchet
distance rather than a crash, and a second call trains and measures nothing."""

import json

import numpy as np
import pytest
import torch

from vaelab import cli
from vaelab.comparison import FAMILIES, PRESETS, family_config
from vaelab.data.batches import load_split
from vaelab.eval.anomaly import auroc
from vaelab.eval.likelihood import evaluate_run
from vaelab.files import read_tensors
from vaelab.generate import generate, load_generator
from vaelab.models.regularised import WAE
from vaelab.runs.load import load_run
from vaelab.thesis.images import normalize

SETTINGS = ["data.limit=500", "data.test_limit=100"]


def noise(self, n, labels=None, generator=None, temperature=1.0):
    """A broken sampler: uniform noise instead of decoded draws."""
    return torch.rand(n, 1, 28, 28, generator=generator)


def cdist_precision_recall(generated, real, k=3):
    """Precision and recall from torch.cdist and kthvalue (the point itself at distance 0
    is the first of its row, so its k-th neighbour among the others is the (k+1)-th)."""

    def radii(x):
        return torch.cdist(x, x).kthvalue(k + 1, dim=1).values

    inside = lambda q, p: (torch.cdist(q, p) <= radii(p) + 1e-9).any(1).double().mean()  # noqa: E731
    return float(inside(generated, real)), float(inside(real, generated))


def run_files(out):
    """Every file of every run folder (the members', the judge's), by path: what a second
    call must not touch."""
    return {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.parent != out}


@pytest.mark.slow
def test_reproduce_models_tiny_columns_from_the_models(mnist_cache, tmp_path, capsys, monkeypatch):
    from vaelab.comparison import reproduce_models

    monkeypatch.setattr(WAE, "sample", noise)
    out = tmp_path / "models"
    kwargs = dict(families=["vae", "wae"], cache=mnist_cache, progress=False, settings=SETTINGS)
    table = reproduce_models(out, "tiny", **kwargs).read_text()
    record = json.loads((out / "models.json").read_text())
    vae, wae = (record["families"][s]["seeds"][0] for s in ("vae", "wae"))
    p = PRESETS["tiny"]

    # parameters, NLL and MSE: the run's own model, and evaluate_run called again here
    for row in (vae, wae):
        _, model = load_run(row["run"])
        assert row["parameters"] == sum(t.numel() for t in model.parameters())
        again = evaluate_run(row["run"], k=p.k, limit=p.test_images, cache=mnist_cache,
                             progress=False, split="test")  # fmt: skip
        assert again["n_images"] == p.test_images
        assert row["recon_mse_per_pixel"] == pytest.approx(again["recon_mse_per_pixel"])
        assert row.get("nll") == pytest.approx(again.get("nll"))  # the VAE's; none for the WAE
    assert vae["nll"] > 0 and "nll" not in wae and "nll_bound" not in wae
    assert f"| VAE | {vae['parameters']:,} |" in table and f"{vae['nll']:.2f} |" in table
    assert "| WAE-MMD (λ = 100) | " in table and " | – | " in table  # its NLL cell

    # the judge's columns: the samples' features against cdist-based precision and recall
    _, clf = load_run(out / "classifier")
    train = load_split("mnist", "train50k", mnist_cache)
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[: p.reference]
    real = clf.features(normalize(train.images[pick])).double()
    _, model = load_generator(vae["run"], mnist_cache)
    fake = clf.features(normalize(generate(model, p.samples, None, 0))).double()
    assert (vae["precision"], vae["recall"]) == pytest.approx(cdist_precision_recall(fake, real))
    test = load_split("mnist", "test", mnist_cache, p.samples)  # the floor row: real images
    floor = cdist_precision_recall(clf.features(normalize(test.images)).double(), real)
    assert (record["real test"]["precision"], record["real test"]["recall"]) == pytest.approx(floor)
    assert min(floor) > 0.5  # not a trivial (0, 0): real test images lie on the real manifold
    # the broken sampler: judged, not a crash, and worse than the working one
    assert wae["frechet"] > vae["frechet"] and wae["precision"] <= vae["precision"]
    assert f"{wae['frechet']:.1f}" in table and record["real test"]["frechet"] < vae["frechet"]

    # one-class AUROC: the chosen kind's test AUROC from the digit-5 run's scores
    truth = load_split("mnist", "test", mnist_cache, p.anomaly_test_images).labels.numpy()
    for slug, row in (("vae", vae), ("wae", wae)):
        cell = row["anomaly"]["5"]
        scores = read_tensors(out / slug / "digit-5-seed-0" / "stage-scores-test.safetensors")[0]
        s, normal = scores[cell["chosen"]].numpy(), truth == 5
        assert cell["auroc"] == pytest.approx(auroc(s[normal], s[~normal]))
        assert cell["valid"][cell["chosen"]] == max(cell["valid"].values())
    assert (out / "samples.png").stat().st_size > 1000

    # a second call: nothing trained, nothing measured again, the same table
    before = run_files(out)
    capsys.readouterr()
    again = reproduce_models(out, "tiny", **kwargs).read_text()
    printed = capsys.readouterr().out
    assert "already trained" in printed and "training " not in printed
    assert run_files(out) == before
    assert again.split("| family")[1] == table.split("| family")[1]


def test_every_family_config_is_valid_and_shares_the_base():
    from vaelab.models.registry import check_unused

    for slug in FAMILIES:
        cfg = family_config(slug, 1, 3)
        check_unused(cfg.model)
        assert cfg.train.seed == 1 and cfg.train.epochs == 3 and cfg.data.split == "train50k"
        assert cfg.data.binarize == "dynamic" and cfg.train.keep_best
    assert len(FAMILIES) == 12


def test_reproduce_models_cli_refusals(capsys):
    for argv, says in ((["reproduce", "models", "--digits", "3"], "--digits is an option of "
                        "reproduce anomaly only"),
                       (["reproduce", "thesis", "--families", "vae"], "--families is an option"),
                       (["reproduce", "anomaly", "--seeds", "2"], "--seeds is an option"),
                       (["reproduce", "models", "--preset", "demo"], "does not apply"),
                       (["reproduce", "models", "--families", "vae,gan"], "unknown family 'gan'")):  # fmt: skip
        assert cli.main(argv) == 1
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_the_report_cells():
    from vaelab.comparison_report import stat

    assert stat([None, None], ".2f") == "–"
    assert stat([1.0], ".2f") == "1.00"
    assert stat([1.0, 3.0, None], ".1f", 100) == f"200.0 ± {np.std([100, 300], ddof=1):.1f}"
