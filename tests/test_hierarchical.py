"""The two-layer VAE (model.kind = "vae2"): its importance weights against torch.distributions
with the same draws, a closed form, the bounds' order, and the verbs end to end."""

import math

import pytest
import torch
from torch import distributions as D

from helpers import trained_resumed_alike
from vaelab import cli
from vaelab.config import load_config
from vaelab.eval.likelihood import log_likelihood
from vaelab.models.registry import build_model

CONFIG = "configs/mnist_vae2.toml"
SMALL = ["model.widths=[32]", "model.bottleneck=8", "model.top_widths=[8]", "model.top_bottleneck=4",
         "model.image_shape=[1, 6, 6]"]  # fmt: skip


def small(*extra):
    cfg = load_config(CONFIG, [*SMALL, *extra])
    torch.manual_seed(0)
    return build_model(cfg.model, cfg.train.loss).double()


def test_log_weights_against_torch_distributions_with_the_same_draws():
    model = small()
    x = torch.bernoulli(torch.full((5, 1, 6, 6), 0.3, dtype=torch.float64))
    k = 3
    torch.manual_seed(1)
    got = model.log_weights(x, k)  # (5, 3)
    torch.manual_seed(1)  # the same stream: ε₁ (B, k, Z₁) first, then ε₂ (B·k, 1, Z₂)
    eps1 = torch.randn(5, k, 8, dtype=torch.float64)
    eps2 = torch.randn(5 * k, 1, 4, dtype=torch.float64).squeeze(1)
    mu1, lv1 = model.q1(x.flatten(1)).chunk(2, -1)
    q1 = D.Normal(mu1.unsqueeze(1), (0.5 * lv1).exp().unsqueeze(1))
    z1 = q1.loc + q1.scale * eps1  # (B, k, Z₁)
    mu2, lv2 = model.q2(z1.reshape(-1, 8)).chunk(2, -1)
    q2 = D.Normal(mu2, (0.5 * lv2).exp())
    z2 = q2.loc + q2.scale * eps2  # (B·k, Z₂)
    pm, plv = model.p1(z2).chunk(2, -1)
    p1 = D.Normal(pm, (0.5 * plv).exp())
    px = D.Bernoulli(logits=model.px(z1.reshape(-1, 8)))
    xk = x.flatten(1).repeat_interleave(k, 0)
    expected = (px.log_prob(xk).sum(-1) + p1.log_prob(z1.reshape(-1, 8)).sum(-1)
                + D.Normal(0.0, 1.0).log_prob(z2).sum(-1) - q2.log_prob(z2).sum(-1)).reshape(5, k) \
        - q1.log_prob(z1).sum(-1)  # fmt: skip
    torch.testing.assert_close(got, expected)
    torch.manual_seed(1)  # the top layer's part of the KL, logged as kl_top
    top = model._log_parts(x, k)[2]
    want = (q2.log_prob(z2).sum(-1) - D.Normal(0.0, 1.0).log_prob(z2).sum(-1)).reshape(5, k)
    torch.testing.assert_close(top, want)


def test_zero_networks_give_the_closed_form():
    """All weights zero: every Gaussian is N(0, I), so the latent terms cancel exactly and
    log w = 36 · log ½ for any binary image and any draw."""
    model = small()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    x = torch.bernoulli(torch.full((4, 1, 6, 6), 0.5, dtype=torch.float64))
    lw = model.log_weights(x, 7)
    torch.testing.assert_close(lw, torch.full((4, 7), 36 * math.log(0.5), dtype=torch.float64))
    terms = model.terms(x)
    torch.testing.assert_close(terms["kl"], torch.zeros(4, dtype=torch.float64))


def test_the_importance_sampled_likelihood_lies_above_the_elbo():
    model = small()
    x = torch.bernoulli(torch.full((64, 1, 6, 6), 0.3, dtype=torch.float64))
    torch.manual_seed(0)
    elbo = model.elbo(x).mean()
    nll = -log_likelihood(model, x, 500).mean()
    iwae5 = (torch.logsumexp(model.log_weights(x, 5), 1) - math.log(5)).mean()
    assert elbo < iwae5 < -nll
    with pytest.raises(Exception, match="no β"):
        model.elbo(x, beta=2.0)


def test_trains_resumes_bit_for_bit_and_every_verb_runs(mnist_cache, tmp_path, capsys):
    sets = ["data.limit=300", "data.test_limit=100", "model.widths=[64]", "model.bottleneck=16",
            "model.top_widths=[16]", "model.top_bottleneck=4", "model.k=2"]  # fmt: skip
    run = trained_resumed_alike(CONFIG, sets, tmp_path, mnist_cache)
    opts = ["--cache", str(mnist_cache)]
    assert cli.main(["eval", str(run), "--k", "10", "--limit", "50", *opts]) == 0
    assert cli.main(["sample", str(run), "-n", "16", "--out", str(tmp_path / "s.png")]) == 0
    assert cli.main(["plot", str(run), "manifold", *opts]) == 1  # 4-D top layer: one line
    assert cli.main(["plot", str(run), "samples", *opts]) == 0
    assert cli.main(["anomaly", "score", str(run), "mnist:test", "--limit", "50", "--k", "5",
                     "--no-progress", *opts]) == 0  # fmt: skip
    header = (run / "scores.csv").read_text().splitlines()[0]
    assert header.startswith("index,label,mse,bce,relative,neg_elbo,nll,latent")
    err = capsys.readouterr().err
    assert err.count("vaelab: error") == 1 and "Traceback" not in err


def test_the_precision_weighted_gaussian_is_the_normalised_product():
    from vaelab.models.hierarchical import precision_weighted
    from vaelab.models.posteriors import DiagonalGaussian

    torch.manual_seed(0)
    a = DiagonalGaussian(
        torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    )
    b = DiagonalGaussian(
        torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    )
    q, z = precision_weighted(a, b), torch.randn(4, 3, dtype=torch.float64)
    normal = lambda g, v: D.Normal(g.mu, (0.5 * g.logvar).exp()).log_prob(v)  # noqa: E731
    # N(z; a) N(z; b) = N(μ_a; μ_b, σ_a² + σ_b²) · N(z; q)
    joint = D.Normal(b.mu, (a.logvar.exp() + b.logvar.exp()).sqrt()).log_prob(a.mu)
    torch.testing.assert_close(normal(a, z) + normal(b, z), joint + normal(q, z))
    tiny = precision_weighted(DiagonalGaussian(a.mu.float(), torch.full((4, 3), -200.0)), b)
    assert torch.isfinite(tiny.mu).all() and torch.isfinite(tiny.logvar).all()  # no overflow


def test_ladder_log_weights_against_torch_distributions_with_the_same_draws():
    model = small("model.ladder=true")
    x = torch.bernoulli(torch.full((5, 1, 6, 6), 0.3, dtype=torch.float64))
    k = 3
    torch.manual_seed(1)
    got = model.log_weights(x, k)
    torch.manual_seed(1)  # z₂ first: ε₂ (B, k, Z₂), then ε₁ (B·k, 1, Z₁)
    eps2 = torch.randn(5, k, 4, dtype=torch.float64)
    eps1 = torch.randn(5 * k, 1, 8, dtype=torch.float64).squeeze(1)
    mu1, lv1 = model.q1(x.flatten(1)).chunk(2, -1)  # bottom-up
    mu2, lv2 = model.q2(mu1).chunk(2, -1)
    q2 = D.Normal(mu2.unsqueeze(1), (0.5 * lv2).exp().unsqueeze(1))
    z2 = q2.loc + q2.scale * eps2  # (B, k, Z₂)
    pm, plv = model.p1(z2.reshape(-1, 4)).chunk(2, -1)
    up_prec, p_prec = (-lv1).exp().repeat_interleave(k, 0), (-plv).exp()
    var = 1 / (up_prec + p_prec)
    q1 = D.Normal(var * (mu1.repeat_interleave(k, 0) * up_prec + pm * p_prec), var.sqrt())
    z1 = q1.loc + q1.scale * eps1  # (B·k, Z₁)
    px = D.Bernoulli(logits=model.px(z1))
    expected = (px.log_prob(x.flatten(1).repeat_interleave(k, 0)).sum(-1)
                + D.Normal(pm, (0.5 * plv).exp()).log_prob(z1).sum(-1)
                + D.Normal(0.0, 1.0).log_prob(z2.reshape(-1, 4)).sum(-1)
                - q1.log_prob(z1).sum(-1)).reshape(5, k) - q2.log_prob(z2).sum(-1)  # fmt: skip
    torch.testing.assert_close(got, expected)
    torch.manual_seed(0)
    xs = torch.bernoulli(torch.full((64, 1, 6, 6), 0.3, dtype=torch.float64))
    elbo, nll = model.elbo(xs).mean(), -log_likelihood(model, xs, 500).mean()
    assert elbo < -nll


def test_the_ladder_with_a_warmup_trains_and_resumes_bit_for_bit(mnist_cache, tmp_path):
    """Resumed at epoch 1 of a 3-epoch warm-up: the latent part's weight must be 1/3 again."""
    sets = ["data.limit=300", "data.test_limit=100", "model.widths=[64]", "model.bottleneck=16",
            "model.top_widths=[16]", "model.top_bottleneck=4", "model.ladder=true",
            "model.warmup=3"]  # fmt: skip
    run = trained_resumed_alike(CONFIG, sets, tmp_path, mnist_cache)
    text = (run / "config.toml").read_text()
    assert "ladder = true" in text and "warmup = 3" in text


@pytest.mark.parametrize("k", [1, 4])
def test_the_warmup_weighs_the_latent_part_by_epoch_in_training_only(k):
    model = small(f"model.k={k}", "model.warmup=4")
    x = torch.bernoulli(torch.full((5, 1, 6, 6), 0.3, dtype=torch.float64))
    for epoch, beta in [(0, 0.0), (1, 0.25), (3, 0.75), (4, 1.0), (20, 1.0)]:
        model.begin_epoch(epoch, 30)
        for training, weight in [(True, beta), (False, 1.0)]:  # eval: always the full bound
            model.train(training)
            torch.manual_seed(2)
            got = model.terms(x)["loss"]
            torch.manual_seed(2)
            log_px, log_latent, _ = model._log_parts(x, k)  # (B, k) each, the same draws
            want = -(torch.logsumexp(log_px + weight * log_latent, 1) - math.log(k))
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    model.train()
    model.begin_epoch(0, 30)  # β = 0: the loss is the reconstruction term alone (k = 1)
    torch.manual_seed(3)
    terms = model.terms(x)
    if k == 1:
        torch.testing.assert_close(terms["loss"], terms["reconstruction"], rtol=0, atol=0)


def test_reconstruction_goes_through_the_bottom_layer_only():
    model = small()
    x = torch.bernoulli(torch.full((4, 1, 6, 6), 0.3, dtype=torch.float64))
    mu1 = model.q1(x.flatten(1)).chunk(2, -1)[0]  # the mean of q(z₁ | x), by hand
    want = torch.sigmoid(model.px(mu1)).reshape(4, 1, 6, 6)
    before = model.reconstruct(x)
    torch.testing.assert_close(before, want)
    with torch.no_grad():  # the top layer's networks play no part in it
        for p in [*model.q2.parameters(), *model.p1.parameters()]:
            p.add_(1.0)
    torch.testing.assert_close(model.reconstruct(x), before, rtol=0, atol=0)
    assert not torch.equal(model.decode(model.encode(x)), before)
