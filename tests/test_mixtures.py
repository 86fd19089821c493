"""The learned mixture priors (#17): a mixture of Gaussians and the VampPrior, checked
against torch.distributions and a brute-force sum over pseudo-inputs, then trained, resumed,
evaluated and sampled through the CLI on real MNIST."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch import distributions as D

from helpers import TINY_MNIST, trained_resumed_alike
from vaelab import cli
from vaelab.config import load_config
from vaelab.errors import ConfigError
from vaelab.models.mixtures import MixtureOptions, MixturePrior
from vaelab.models.registry import build_model


def vae(*extra):
    cfg = load_config(None, ["model.kind=vae", "model.widths=[32]", "model.bottleneck=3",
                             "model.image_shape=[1,6,6]", *extra])  # fmt: skip
    return build_model(cfg.model, "bce")


def test_mixture_log_density_is_torchs():
    torch.manual_seed(0)
    prior = MixturePrior(4, MixtureOptions(components=5))
    with torch.no_grad():
        prior.logvars.normal_(0, 0.5)
        prior.logits.normal_()
    reference = D.MixtureSameFamily(
        D.Categorical(logits=prior.logits),
        D.Independent(D.Normal(prior.means, torch.exp(0.5 * prior.logvars)), 1),
    )
    z = 3 * torch.randn(7, 2, 4)  # any leading shape, far tails included
    torch.testing.assert_close(prior.log_prob(z), reference.log_prob(z))


def test_mixture_samples_follow_its_weights_and_components():
    prior = MixturePrior(2, MixtureOptions(components=3))
    with torch.no_grad():
        prior.means.copy_(torch.tensor([[-20.0, 0], [0, 0], [20, 0]]))
        prior.logits.copy_(torch.tensor([0.5, 0.2, 0.3]).log())
        prior.logvars.fill_(math.log(0.25))
    g = torch.Generator().manual_seed(1)
    z = prior.sample(40000, g)
    freq = torch.stack([(z[:, 0] < -10).float().mean(), (z[:, 0].abs() < 10).float().mean(),
                        (z[:, 0] > 10).float().mean()])  # fmt: skip
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.2, 0.3]), atol=0.01, rtol=0)
    assert z[:, 1].std().item() == pytest.approx(0.5, rel=0.03)
    cold = prior.sample(50, torch.Generator().manual_seed(1), temperature=0.0)
    assert set(cold[:, 0].tolist()) <= {-20.0, 0.0, 20.0}  # T = 0: the components' means


def test_vamp_prior_is_the_mean_of_the_pseudo_inputs_posteriors():
    """log p(z) against a brute-force loop: (1/K) Σ_k N(z; μ(u_k), σ²(u_k)) with the model's
    own encoder at each pseudo-input."""
    torch.manual_seed(0)
    model = vae("model.prior.kind=vamp", "model.prior.components=6")
    z = torch.randn(5, 3)
    dens = []
    for u in model.prior.pseudo_inputs():
        mu, logvar = model.posterior(u[None])
        dens.append(D.Independent(D.Normal(mu[0], torch.exp(0.5 * logvar[0])), 1).log_prob(z))
    expected = torch.logsumexp(torch.stack(dens), 0) - math.log(6)
    torch.testing.assert_close(model.prior.log_prob(z), expected)
    assert model.prior.pseudo_inputs().min() >= 0 and model.prior.pseudo_inputs().max() <= 1
    # the pseudo-inputs are the model's parameters: trained and saved with it
    assert "prior.pseudo" in model.state_dict()
    loss = model.terms(torch.rand(4, 1, 6, 6).round())["loss"].mean()
    loss.backward()
    assert model.prior.pseudo.grad is not None and model.prior.pseudo.grad.abs().sum() > 0


def test_vamp_mixture_is_computed_once_per_evaluation_and_afresh_after_a_step():
    """Inside ``evaluating`` the pseudo-inputs' posteriors are computed once and give a
    fresh pass's numbers; after the block an optimizer step (our fused Adam, which leaves
    torch's version counters alone) is seen, and with autograd on nothing is kept."""
    from vaelab.eval.common import evaluating
    from vaelab.train.optimizers import KernelAdam

    torch.manual_seed(0)
    model = vae("model.prior.kind=vamp", "model.prior.components=6")
    z = torch.randn(5, 3)

    def fresh():
        with torch.enable_grad():
            return model.prior.log_prob(z).detach()

    with evaluating(model), torch.no_grad():
        first = model.prior.log_prob(z)
        assert model.prior.mixture()[0] is model.prior.mixture()[0]  # kept, not recomputed
        torch.testing.assert_close(first, fresh(), rtol=0, atol=0)
    assert model.prior.mixture()[0] is not model.prior.mixture()[0]  # autograd on: fresh
    opt = KernelAdam(model.parameters(), lr=0.05)
    model.terms(torch.rand(4, 1, 6, 6).round())["loss"].mean().backward()
    opt.step()
    with evaluating(model), torch.no_grad():
        stepped = model.prior.log_prob(z)
        torch.testing.assert_close(stepped, fresh(), rtol=0, atol=0)
    assert not torch.equal(stepped, first)
    with torch.no_grad():  # outside an evaluation: nothing kept
        assert model.prior.mixture()[0] is not model.prior.mixture()[0]


def test_vamp_pseudo_inputs_pass_stays_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    model = vae("model.prior.kind=vamp", "model.prior.components=6")
    plain = model.prior.mixture()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.prior.mixture()
        rounded = model.posterior(model.prior.pseudo_inputs()).mu  # the encoder elsewhere
    assert not torch.equal(rounded, plain[0])  # bf16 matmuls do change the means
    torch.testing.assert_close(mixed, plain, rtol=0, atol=0)


def test_kl_warmup_weights_the_kl_by_epoch_and_is_refused_with_iwae():
    torch.manual_seed(0)
    model = vae("model.prior.kind=vamp", "model.prior.components=4", "model.beta=2.0",
                "model.warmup=4")  # fmt: skip
    x = torch.rand(6, 1, 6, 6).round()
    for epoch, weight in [(0, 0.0), (1, 0.5), (2, 1.0), (3, 1.5), (4, 2.0), (9, 2.0)]:
        model.begin_epoch(epoch, 10)
        torch.manual_seed(1)
        terms = model.terms(x)
        torch.manual_seed(1)
        rec, kl = model.elbo_terms(x)
        torch.testing.assert_close(terms["loss"], rec + weight * kl, rtol=0, atol=0)
        model.eval()  # the test loss that keep_best compares across epochs: always the full β
        torch.manual_seed(1)
        torch.testing.assert_close(model.terms(x)["loss"], rec + 2.0 * kl, rtol=0, atol=0)
        model.train()
    with pytest.raises(ConfigError, match="model.warmup = 5 ramps the KL term"):
        vae("model.warmup=5", "model.k=5")
    with pytest.raises(ConfigError, match="model.warmup"):
        vae("model.warmup=-1")
    with pytest.raises(ConfigError, match="model.warmup needs model.kind = 'vae'"):
        build_model(load_config(None, ["model.kind=rae", "model.warmup=3"]).model, "bce")


def test_mixture_priors_refuse_what_they_cannot_do():
    with pytest.raises(ConfigError, match="needs an unconditional VAE"):
        vae("model.prior.kind=vamp", "model.conditional=true", "model.classes=['a','b']")
    with pytest.raises(ConfigError, match="components must be >= 1"):
        vae("model.prior.kind=mog", "model.prior.components=0")
    with pytest.raises(ConfigError, match="unknown config key model.prior.components"):
        vae("model.prior.components=3")  # the normal prior has no components


CONFIG = str(Path(__file__).parents[1] / "configs" / "mnist_vae.toml")


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_a_vae_with_a_learned_prior_trains_resumes_evaluates_and_samples(
    prior, mnist_cache, tmp_path, capsys
):
    # resumed mid-warm-up: KL weight 0 in epoch 1, β/3 in epoch 2
    sets = [*TINY_MNIST, f"model.prior.kind={prior}", "model.prior.components=8", "model.warmup=3"]
    run = str(trained_resumed_alike(CONFIG, sets, tmp_path, mnist_cache))
    cache = ["--cache", str(mnist_cache)]
    capsys.readouterr()
    assert cli.main(["eval", run, "--k", "50", "--limit", "50", *cache, "--no-progress"]) == 0
    record = json.loads((tmp_path / "straight" / "eval.json").read_text())[-1]
    assert math.isfinite(record["nll"]) and record["nll"] <= -record["elbo"] + 1e-3
    assert cli.main(["sample", run, "-n", "16", "--out", str(tmp_path / "s.png"), *cache]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
