"""The ex-post Gaussian mixture of autoencoders (#17): EM against torch.distributions and a
known mixture, its stage through the CLI."""

from pathlib import Path

import pytest
import torch
from torch import distributions as D

from vaelab import cli
from vaelab.config import ExPostConfig
from vaelab.errors import ConfigError
from vaelab.models.gmm import GMMPrior, component_log_probs, expost_stage, fit_gmm


def three_clusters(n=3000, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.tensor([[-6.0, 0.0], [0.0, 5.0], [6.0, -1.0]])
    weights = torch.tensor([0.5, 0.3, 0.2])
    k = torch.multinomial(weights, n, replacement=True, generator=g)
    scale = torch.tensor([[[1.0, 0], [0.5, 0.5]], [[0.3, 0], [0, 1.0]], [[0.8, 0], [-0.4, 0.6]]])
    z = means[k] + (scale[k] @ torch.randn(n, 2, 1, generator=g))[..., 0]
    return z, means, weights, scale


def mixture(fit):
    return D.MixtureSameFamily(D.Categorical(logits=fit["log_weights"].double()),
                               D.MultivariateNormal(fit["means"].double(),
                                                    scale_tril=fit["scale_tril"].double()))  # fmt: skip


def test_component_densities_are_torchs():
    z, means, _, scale = three_clusters(50)
    ours = component_log_probs(z.double(), means.double(), scale.double())
    ref = torch.stack([D.MultivariateNormal(m, scale_tril=s).log_prob(z) for m, s in
                       zip(means, scale, strict=True)], 1)  # fmt: skip
    torch.testing.assert_close(ours.float(), ref)


def test_em_recovers_a_known_mixture_and_is_seeded():
    z, means, weights, scale = three_clusters()
    fit = fit_gmm(z, 3, "full", seed=0)
    order = fit["means"][:, 0].argsort()
    torch.testing.assert_close(fit["means"][order], means, atol=0.15, rtol=0)
    torch.testing.assert_close(fit["log_weights"][order].exp(), weights, atol=0.03, rtol=0)
    cov = fit["scale_tril"] @ fit["scale_tril"].transpose(1, 2)
    torch.testing.assert_close(cov[order], scale @ scale.transpose(1, 2), atol=0.15, rtol=0)
    again = fit_gmm(z, 3, "full", seed=0)
    assert all(torch.equal(fit[key], again[key]) for key in fit)


def test_em_ends_at_a_fixed_point_of_an_independent_em_step():
    """Responsibilities from torch.distributions at the fitted parameters, one M-step by
    hand: the parameters come back (EM has converged to a fixed point)."""
    z, *_ = three_clusters()
    fit = fit_gmm(z, 3, "full", seed=1)
    zd = z.double()
    comps = D.MultivariateNormal(fit["means"].double(), scale_tril=fit["scale_tril"].double())
    joint = comps.log_prob(zd[:, None, :]) + fit["log_weights"].double()  # (N, K)
    resp = joint.softmax(1)
    nk = resp.sum(0)
    means = resp.T @ zd / nk[:, None]
    torch.testing.assert_close(means.float(), fit["means"], atol=2e-3, rtol=0)
    torch.testing.assert_close((nk / len(z)).log().float(), fit["log_weights"], atol=2e-3, rtol=0)
    # and it beats one Gaussian on clustered codes
    one = fit_gmm(z, 1, "full")
    assert mixture(fit).log_prob(zd).mean() > mixture(one).log_prob(zd).mean() + 0.5


def test_diagonal_covariances_and_the_prior_density():
    z, *_ = three_clusters()
    fit = fit_gmm(z, 4, "diag", seed=0)
    tril = fit["scale_tril"]
    assert torch.equal(tril, torch.diag_embed(torch.diagonal(tril, dim1=-2, dim2=-1)))
    prior = GMMPrior(**fit)
    probe = 4 * torch.randn(7, 3, 2)
    torch.testing.assert_close(prior.log_prob(probe), mixture(fit).log_prob(probe.double()).float())
    draws = prior.sample(20000, torch.Generator().manual_seed(0))
    assert mixture(fit).log_prob(draws.double()).mean().item() == pytest.approx(
        mixture(fit).log_prob(z.double()).mean().item(), abs=0.05
    )  # draws as likely under the mixture as the data it was fitted to
    cold = prior.sample(30, torch.Generator().manual_seed(0), temperature=0.0)
    assert all(any(torch.equal(c, m) for m in fit["means"]) for c in cold)


def test_expost_options():
    assert expost_stage(ExPostConfig()).name == "expost_gaussian"  # today's AE + Gaussian
    stage = expost_stage(ExPostConfig(components=10, covariance="diag"))
    assert stage.name == "expost_gmm" and stage.label == "gmm10-diag"
    with pytest.raises(ConfigError, match="covariance must be one of full, diag"):
        expost_stage(ExPostConfig(components=2, covariance="tied"))
    with pytest.raises(ConfigError, match="components must be >= 1"):
        expost_stage(ExPostConfig(components=0))
    with pytest.raises(ConfigError, match="3 codes cannot fit 5"):
        fit_gmm(torch.randn(3, 2), 5)


def test_an_autoencoder_samples_through_its_mixture(mnist_cache, tmp_path, capsys):
    config = str(Path(__file__).parents[1] / "configs" / "mnist_ae.toml")
    sets = ["data.limit=600", "data.test_limit=100", "model.widths=[64]", "model.bottleneck=4",
            "train.epochs=1", "model.expost.components=5"]  # fmt: skip
    out = tmp_path / "ae"
    assert cli.main(["train", config, "--out", str(out), "--cache", str(mnist_cache),
                     "--no-progress", *[a for s in sets for a in ("--set", s)]]) == 0  # fmt: skip
    assert (out / "stage-expost_gmm.safetensors").is_file()
    assert not (out / "stage-expost_gaussian.safetensors").exists()
    assert "fitting stage expost_gmm" in capsys.readouterr().out
    assert cli.main(["sample", str(out), "-n", "9", "--out", str(tmp_path / "s.png")]) == 0
    with pytest.raises(ConfigError, match=r"model.expost needs model.kind = 'ae'"):
        from vaelab.config import load_config
        from vaelab.models.registry import check_unused

        check_unused(load_config(None, ["model.kind=vae", "model.expost.components=3"]).model)
