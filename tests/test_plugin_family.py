"""A model family added from outside the package: one class plus one register_family call,
and then `vaelab train/eval/sample/plot/stage` work on it. The family is an autoencoder
whose codes get a factorised Laplace density fitted after training (a stage)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from vaelab import cli
from vaelab.files import read_tensors
from vaelab.models.base import LatentModel
from vaelab.models.nets import arch
from vaelab.models.priors import FactorizedPrior
from vaelab.models.registry import FAMILIES, register_family
from vaelab.models.stages import ExPost

# ------------------------------------------------------------------------ the whole family


class LaplaceAE(LatentModel):
    """An autoencoder with an L1 pull on its codes, sampled from a Laplace fitted ex post
    (per dimension: the median and the mean absolute deviation from it, its MLE)."""

    stages = (
        ExPost(
            name="expost_laplace",
            label="laplace",
            fit_codes=lambda z: {
                "loc": z.median(0).values,
                "scale": (z - z.median(0).values).abs().mean(0),
            },  # fmt: skip
            prior=lambda **t: FactorizedPrior(torch.distributions.Laplace, **t),
        ),
    )

    def __init__(self, cfg, loss: str = "bce_sum"):
        super().__init__()
        make_encoder, make_decoder, _ = arch(cfg)
        self.encoder = make_encoder(cfg, cfg.bottleneck)
        self.decoder = make_decoder(cfg, cfg.bottleneck)
        self.prior = None
        self.init_conditions(None)

    def encode(self, x, c=None):
        return self.encoder(x)  # (B, C, H, W) -> (B, Z)

    def decode(self, z, c=None):
        return torch.sigmoid(self.decoder(z))  # (B, Z) -> (B, C, H, W)

    def terms(self, x, y=None):
        z = self.encode(x)
        rec = F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="none")
        reconstruction, l1 = rec.flatten(1).sum(1), 0.1 * z.abs().sum(1)  # (B,) each
        return {"loss": reconstruction + l1, "reconstruction": reconstruction, "l1": l1}


@pytest.fixture
def laplace_family():
    register_family("laplace_ae", LaplaceAE)
    yield
    FAMILIES.pop("laplace_ae")


# ------------------------------------------------------------------------ the verbs on it


def test_a_family_registered_from_outside_trains_evaluates_samples_and_plots(
    laplace_family, mnist_cache, tmp_path, capsys
):
    run, config = tmp_path / "run", tmp_path / "laplace.toml"
    config.write_text('[model]\nkind = "laplace_ae"\n')
    cache = ["--cache", str(mnist_cache)]
    train = ["train", str(config), "--set", "model.widths=[64]",
             "--set", "model.bottleneck=2", "--set", "data.limit=1000", "--set",
             "data.test_limit=200", "--set", "train.epochs=2", "--out", str(run), *cache]  # fmt: skip
    assert cli.main([*train, "--no-progress"]) == 0
    # the per-term test means are logged, and they add up to the test loss
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    terms = record["test_terms"]
    assert set(terms) == {"reconstruction", "l1"}
    assert terms["reconstruction"] + terms["l1"] == pytest.approx(record["test_loss"], rel=1e-6)

    # the stage ran after the last epoch: its file is hashed in state.json, and it is the
    # Laplace MLE of the codes of the training images (computed here independently)
    state = json.loads((run / "state.json").read_text())
    assert set(state["stages"]) == {"expost_laplace"}
    fitted = read_tensors(run / "stage-expost_laplace.safetensors")[0]
    from vaelab.data.batches import load_split
    from vaelab.runs import load_run
    from vaelab.thesis.images import normalize

    _, model = load_run(run)
    with torch.no_grad():
        z = model.encode(normalize(load_split("mnist", "train", mnist_cache, 20000).images))
    torch.testing.assert_close(fitted["loc"], z.median(0).values)
    torch.testing.assert_close(fitted["scale"], (z - z.median(0).values).abs().mean(0))
    assert isinstance(model.prior, FactorizedPrior) and model.can("sample")
    assert not model.can("log_weights")  # no likelihood: evaluation is the reconstruction

    assert cli.main(["eval", str(run), *cache, "--no-progress"]) == 0
    result = json.loads((run / "eval.json").read_text())[-1]
    test = normalize(load_split("mnist", "test", mnist_cache).images)
    with torch.no_grad():
        mse = (model.decode(model.encode(test)) - test).square().mean()
    assert result["recon_mse_per_pixel"] == pytest.approx(float(mse), rel=1e-5)
    assert "nll" not in result
    png = tmp_path / "s.png"
    assert cli.main(["sample", str(run), "-n", "16", "--out", str(png), *cache]) == 0
    assert png.stat().st_size > 0
    for figure in ("latent", "recon", "loss", "samples", "manifold", "interpolate", "traverse"):
        assert cli.main(["plot", str(run), figure, *cache]) == 0, figure
        assert (run / f"{figure}.png").exists()
    assert cli.main(["stage", str(run), *cache]) == 0
    assert "nothing to fit" in capsys.readouterr().out
    assert cli.main(["stage", str(run), "--redo", "--limit", "300", *cache]) == 0
    refit = read_tensors(run / "stage-expost_laplace.safetensors")[0]
    torch.testing.assert_close(refit["loc"], z[:300].median(0).values)


def test_laplace_samples_follow_the_fitted_density():
    """FactorizedPrior draws by inverse CDF: the sample median and mean absolute deviation
    come back, and from_standard maps N(0, 1) quantiles onto Laplace ones."""
    loc, scale = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0])
    prior = FactorizedPrior(torch.distributions.Laplace, loc=loc, scale=scale)
    z = prior.sample(200_000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.median(0).values, loc, atol=0.02, rtol=0)
    torch.testing.assert_close((z - loc).abs().mean(0), scale, atol=0.02, rtol=0)
    reference = torch.distributions.Laplace(loc, scale)
    torch.testing.assert_close(prior.log_prob(z[:5]), reference.log_prob(z[:5]).sum(-1))
    u = torch.tensor([[0.0, 1.0]])
    expected = reference.icdf(torch.distributions.Normal(0.0, 1.0).cdf(u))
    torch.testing.assert_close(prior.from_standard(u), expected)
    narrow = prior.sample(20_000, torch.Generator().manual_seed(0), temperature=0.5)
    assert ((narrow - loc).abs().mean(0) < 0.6 * scale).all()
