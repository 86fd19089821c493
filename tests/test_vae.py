"""The VAE: objectives against torch.distributions and closed forms, the IWAE bound's
monotonicity, evaluation, the verbs, and the CLI on real MNIST."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import (
    Bernoulli,
    ContinuousBernoulli,
    Independent,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

import vaelab.data.cache as data_cache
import vaelab.runs.folder as runs_folder
import vaelab.runs.load as runs_load
import vaelab.train.loop as train_loop
import vaelab.viz.figures as viz_figures
from vaelab import cli
from vaelab.config import ModelConfig, load_config
from vaelab.data.batches import Batches
from vaelab.data.dataset import ImageDataset
from vaelab.errors import ConfigError, VaelabError
from vaelab.eval.likelihood import evaluate_vae, log_likelihood
from vaelab.models.conditions import digitwise
from vaelab.models.registry import build_model
from vaelab.models.vae import VAE


def small_vae(likelihood="bernoulli", **kw):
    torch.manual_seed(0)
    kw = {"widths": [16], **kw}
    cfg = ModelConfig(kind="vae", image_shape=[1, 6, 6], bottleneck=3,
                      likelihood=likelihood, activation="tanh", **kw)  # fmt: skip
    return build_model(cfg, "mse")


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "continuous_bernoulli"])
def test_log_px_matches_torch_distributions(likelihood):
    model = small_vae(likelihood, **({"sigma": 0.3} if likelihood == "gaussian" else {}))
    x = torch.rand(4, 1, 6, 6)
    if likelihood == "bernoulli":
        x = x.round()
    logits = torch.randn(4, 1, 6, 6)
    ref = {
        "bernoulli": lambda: Independent(Bernoulli(logits=logits), 3).log_prob(x),
        "gaussian": lambda: Independent(Normal(torch.sigmoid(logits), 0.3), 3).log_prob(x),
        "continuous_bernoulli": lambda: Independent(ContinuousBernoulli(logits=logits), 3).log_prob(
            x
        ),
    }[likelihood]()
    torch.testing.assert_close(model.log_px(logits, x), ref)


def test_elbo_kl_term_matches_torch():
    model = small_vae()
    x = torch.rand(5, 1, 6, 6).round()
    mu, logvar = model.posterior(x)
    q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    p = Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    torch.manual_seed(1)
    elbo = model.elbo(x)
    torch.manual_seed(1)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    ref = model.log_px(model.decoder(z), x) - kl_divergence(q, p)
    torch.testing.assert_close(elbo, ref)
    torch.manual_seed(1)
    torch.testing.assert_close(model.objective(x), -ref)  # beta = 1, k = 1
    beta_model = small_vae(beta=4.0)
    torch.manual_seed(1)
    torch.testing.assert_close(beta_model.elbo(x, 4.0), ref - 3.0 * kl_divergence(q, p))


def test_objective_uses_the_configured_beta_and_k():
    x = torch.rand(5, 1, 6, 6).round()
    beta_model = small_vae(beta=4.0)  # built from a config with model.beta = 4
    torch.manual_seed(1)
    objective = beta_model.objective(x)
    torch.manual_seed(1)
    torch.testing.assert_close(objective, -beta_model.elbo(x, 4.0))
    torch.manual_seed(1)
    assert not torch.allclose(objective, -beta_model.elbo(x, 1.0))  # β really matters here
    iwae = small_vae(k=5)  # model.k = 5: the IWAE bound, not the ELBO
    torch.manual_seed(2)
    objective = iwae.objective(x)
    torch.manual_seed(2)
    torch.testing.assert_close(objective, -iwae.iwae_bound(x, 5))


def test_beta_with_the_iwae_bound_is_refused(mnist_cache, tmp_path):
    """The IWAE objective has no KL term to weight: β ≠ 1 with k > 1 is a ConfigError
    naming both keys (it used to be ignored), before any run file is written."""
    config = Path(__file__).parents[1] / "configs" / "mnist_vae.toml"
    cfg = load_config(config, ["model.beta=4.0", "model.k=5", "data.limit=100"])
    with pytest.raises(ConfigError, match=r"model.beta = 4.0 .*model.k = 5"):
        train_loop.train(cfg, tmp_path / "r", cache=mnist_cache, progress=False, log=lambda s: None)
    assert not (tmp_path / "r").exists()
    small_vae(beta=4.0)  # k = 1: a β-VAE
    small_vae(k=5)


@pytest.mark.parametrize(
    ("kind", "setting", "message"),
    [
        ("ae", {"k": 5}, "model.k needs model.kind = 'vae' or 'vae2' (it is 'ae')"),
        ("classifier", {"likelihood": "gaussian"}, "model.likelihood needs model.kind = 'vae'"),
        ("ae", {"conditional": True}, "model.conditional needs model.kind = 'vae'"),
        ("vae", {"learn_sigma": True}, "model.learn_sigma applies to the likelihoods gaussian,"),
        ("vae", {"sigma": 0.3, "likelihood": "continuous_bernoulli"}, "model.sigma applies to"),
    ],
)
def test_settings_the_model_would_ignore_are_refused(kind, setting, message):
    cfg = ModelConfig(kind=kind, image_shape=[1, 28, 28], **setting)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_model(cfg, "mse")
    build_model(ModelConfig(kind="vae", image_shape=[1, 28, 28], likelihood="gaussian",
                            sigma=0.3, learn_sigma=True), "mse")  # fmt: skip


def test_log_weights_match_torch_densities():
    model = small_vae()
    x = torch.rand(3, 1, 6, 6).round()
    torch.manual_seed(2)
    lw = model.log_weights(x, 7)  # (3, 7)
    torch.manual_seed(2)
    mu, logvar = model.posterior(x)
    eps = torch.randn(3, 7, 3)
    z = mu[:, None] + torch.exp(0.5 * logvar)[:, None] * eps
    q = Independent(Normal(mu[:, None], torch.exp(0.5 * logvar)[:, None]), 1)
    prior = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)
    px = Independent(Bernoulli(logits=model.decoder(z.reshape(21, 3)).reshape(3, 7, 1, 6, 6)), 3)
    ref = px.log_prob(x[:, None]) + prior.log_prob(z) - q.log_prob(z)
    torch.testing.assert_close(lw, ref, rtol=1e-5, atol=1e-4)


@torch.no_grad()
def test_iwae_bound_grows_with_k_and_equals_elbo_at_1(trained_vae, mnist_cache):
    from vaelab.data.cache import load_dataset

    _, model = runs_load.load_run(trained_vae)
    test = load_dataset("mnist", "test", mnist_cache).limit(64)
    x = Batches(test, 64, shuffle=False, binarize="static").images  # (64, 1, 28, 28)
    torch.manual_seed(0)
    reps = 40
    bounds = {
        k: torch.stack([model.iwae_bound(x, k).mean() for _ in range(reps)]) for k in (1, 5, 50)
    }
    means = {k: float(v.mean()) for k, v in bounds.items()}
    se = {k: float(v.std() / math.sqrt(reps)) for k, v in bounds.items()}
    # one-sided: each larger k is higher by more than 3 standard errors of the difference
    for lo, hi in ((1, 5), (5, 50)):
        assert means[hi] - means[lo] > 3 * math.hypot(se[lo], se[hi]), (lo, hi, means, se)
    assert means[50] - means[1] > 0.5  # the gap is real, not noise
    elbos = torch.stack([model.elbo(x).mean() for _ in range(reps)])
    assert (
        abs(means[1] - float(elbos.mean()))
        < 4 * math.hypot(se[1], float(elbos.std()) / math.sqrt(reps)) + 0.05
    )


def test_importance_sampling_matches_ppca_closed_form():
    """Linear decoder x = W z + b + σε: p(x) = N(b, W Wᵀ + σ² I) exactly. The encoder is a
    deliberately imperfect (shifted, wider) posterior, so the estimate must really average;
    the tolerance is 4 delta-method standard errors of log p̂ from the weights themselves."""
    torch.manual_seed(0)
    d, zdim, sigma = 5, 2, 0.5
    w, b = torch.randn(d, zdim), torch.randn(d)
    cov = w @ w.T + sigma**2 * torch.eye(d)
    # exact posterior: Σ_post = (I + WᵀW/σ²)⁻¹, μ_post = Σ_post Wᵀ(x − b)/σ²
    post_cov = torch.linalg.inv(torch.eye(zdim) + w.T @ w / sigma**2)
    enc = nn.Linear(d, 2 * zdim)
    with torch.no_grad():
        enc.weight.copy_(torch.cat([post_cov @ w.T / sigma**2 * 1.1, torch.zeros(zdim, d)]))
        enc.bias.copy_(torch.cat([-(post_cov @ w.T / sigma**2 * 1.1) @ b + 0.1,
                                  torch.log(torch.diagonal(post_cov) * 1.5)]))  # fmt: skip
    dec = nn.Linear(zdim, d)
    with torch.no_grad():
        dec.weight.copy_(w)
        dec.bias.copy_(b)
    model = VAE(nn.Sequential(nn.Flatten(), enc), nn.Sequential(dec, nn.Unflatten(1, (1, 1, d))),
                zdim, "gaussian_identity", sigma=sigma).double()  # fmt: skip
    x = MultivariateNormal(b, cov).sample((6,)).double().reshape(6, 1, 1, d)
    exact = MultivariateNormal(b.double(), cov.double()).log_prob(x.reshape(6, d))
    torch.manual_seed(1)
    k = 20000
    est = log_likelihood(model, x, k)
    lw = model.log_weights(x, k).double()
    wts = torch.exp(lw - lw.max(dim=1, keepdim=True).values)
    se = wts.std(dim=1) / (wts.mean(dim=1) * math.sqrt(k))
    assert (est - exact).abs().max() < 4 * se.max() + 1e-6
    assert (est - exact).abs().max() < 0.02


def test_verbs_shapes_and_ranges():
    model = small_vae()
    s = model.sample(9, generator=torch.Generator().manual_seed(0))
    assert s.shape == (9, 1, 6, 6) and 0 <= s.min() and s.max() <= 1
    x = torch.rand(2, 1, 6, 6)
    path = model.interpolate(x[0], x[1], steps=5)
    assert path.shape == (5, 1, 6, 6) and 0 <= path.min() and path.max() <= 1
    torch.testing.assert_close(path[0], model.reconstruct(x[:1])[0])
    torch.testing.assert_close(path[-1], model.reconstruct(x[1:])[0])
    assert model.encode(x).shape == (2, 3)
    z1, z2 = model.encode(x[:1]), model.encode(x[1:])  # evenly spaced on the line
    torch.testing.assert_close(path[1:4], model.decode(torch.cat([0.75 * z1 + 0.25 * z2,
                                                                   0.5 * (z1 + z2),
                                                                   0.25 * z1 + 0.75 * z2])))  # fmt: skip


def test_iwae_bound_value_and_its_pairing_of_conditions():
    """The bound is log (1/k) Σ w_i: under one seed it equals the chunked log-likelihood
    estimator (another code path, float64), which a missing log k, or max for logsumexp,
    would break. A conditional model decodes every draw of image i under c_i."""
    model = small_vae()
    x = torch.rand(4, 1, 6, 6).round()
    torch.manual_seed(7)
    bound = model.iwae_bound(x, 6)
    torch.manual_seed(7)
    torch.testing.assert_close(bound.double(), log_likelihood(model, x, 6), rtol=0, atol=1e-4)
    cvae = build_model(ModelConfig(kind="vae", image_shape=[1, 6, 6], bottleneck=3, widths=[16],
                                   conditional=True, classes=list("0123")), "mse")  # fmt: skip
    seen = []
    real = cvae._decoder
    cvae._decoder = lambda z, c: seen.append(c) or real(z, c)
    c = cvae.condition(torch.tensor([0, 1, 2, 3]))  # (4, D)
    cvae.log_weights(x, 3, c=c)
    torch.testing.assert_close(seen[-1].reshape(4, 3, -1), c.unsqueeze(1).expand(4, 3, -1))


def test_learned_sigma_is_a_parameter():
    model = small_vae("gaussian", learn_sigma=True)
    assert any(p is model.log_sigma for p in model.parameters())
    assert model.log_sigma.shape == (1, 6, 6)
    # a blank pixel predicted blank would drive σ -> 0 and log p(x|z) -> ∞: σ has a floor
    x, logits = torch.zeros(1, 1, 6, 6), torch.full((1, 1, 6, 6), -30.0)
    with torch.no_grad():
        model.log_sigma.fill_(-20.0)
    floor = Independent(Normal(torch.sigmoid(logits), 1 / 255), 3).log_prob(x)
    log_px = model.log_px(logits, x)
    torch.testing.assert_close(log_px, floor)
    log_px.sum().backward()  # straight through: a σ below the floor still gets a gradient
    assert model.log_sigma.grad is not None and model.log_sigma.grad.abs().sum() > 0
    real = small_vae("gaussian_identity", learn_sigma=True)  # real-valued data: no floor
    with torch.no_grad():
        real.log_sigma.fill_(-20.0)
    torch.testing.assert_close(real.sigma_in_use(), real.log_sigma)


def _test_images():
    torch.manual_seed(3)
    return ImageDataset((torch.rand(200, 1, 6, 6) * 255).to(torch.uint8))


def test_mean_objective_leaves_the_callers_rng_alone():
    from vaelab.eval.common import mean_objective

    model = small_vae()
    batches = Batches(_test_images(), 50, shuffle=False, binarize="static")
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = mean_objective(model, batches, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert mean_objective(model, batches, seed=4) == first  # seeded: reproducible
    assert mean_objective(model, batches, seed=5) != first  # and the seed matters


def test_evaluations_share_one_signature():
    from vaelab.eval.likelihood import evaluation_for

    batches = Batches(_test_images(), 50, shuffle=False, binarize="static")
    ae = build_model(ModelConfig(image_shape=[1, 6, 6], widths=[16], bottleneck=3), "mse")
    for model in (small_vae(), ae):
        result = evaluation_for(model)(model, batches, k=3, seed=0, progress=False)
        assert result["n_images"] == 200 and result["recon_mse_per_pixel"] > 0


def test_corrupt_eval_json_is_a_checkpoint_error(tmp_path):
    from vaelab.errors import CheckpointError
    from vaelab.eval.likelihood import append_json

    path = tmp_path / "eval.json"
    append_json(path, {"a": 1})
    append_json(path, {"a": 2})
    assert json.loads(path.read_text()) == [{"a": 1}, {"a": 2}]
    path.write_text('[{"a": 1}, {"a"')
    with pytest.raises(CheckpointError, match="eval.json is corrupt"):
        append_json(path, {"a": 3})
    path.write_text('{"a": 1}')
    with pytest.raises(CheckpointError, match="eval.json is not a JSON list"):
        append_json(path, {"a": 3})
    # JSON has no NaN or inf: a diverged model's numbers are written as null, also nested
    path.unlink()
    append_json(path, {"nll": math.nan, "rows": [{"fid": math.inf}], "k": 5})
    assert json.loads(path.read_text()) == [{"nll": None, "rows": [{"fid": None}], "k": 5}]


def test_evaluations_give_the_train_mode_back(monkeypatch):
    """Also after an error (an out-of-memory chunk): a training loop that evaluates goes on
    training with dropout and batch statistics as before."""
    from vaelab.eval.likelihood import evaluate_ae

    model = small_vae().train()
    batches = Batches(_test_images(), 50, shuffle=False, binarize="static")

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(model, "log_weights", out_of_memory)
    with pytest.raises(RuntimeError, match="out of memory"):
        evaluate_vae(model, batches, k=2, progress=False)
    assert model.training
    ae = build_model(ModelConfig(image_shape=[1, 6, 6], bottleneck=2, widths=[8]), "mse").train()
    evaluate_ae(ae, batches)
    assert ae.training


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_sample_counts_are_named(k):
    model = small_vae()
    x = torch.rand(3, 1, 6, 6).round()
    with pytest.raises(VaelabError, match="k must be a whole number"):
        log_likelihood(model, x, k)
    with pytest.raises(VaelabError, match="max_rows must be a whole number"):
        log_likelihood(model, x, 5, max_rows=0)
    with pytest.raises(VaelabError, match="empty batch"):
        log_likelihood(model, x[:0], 5)


def test_log_weights_keep_their_digits_for_a_tight_posterior():
    """log q(z | x) comes from ε, not from z − μ: with σ = e^−12 and μ = 3 in float32, z − μ
    keeps only a few of ε's digits (0.1 nats off over 32 dimensions)."""
    torch.manual_seed(0)
    cfg = ModelConfig(kind="vae", image_shape=[1, 10, 10], bottleneck=32, widths=[64])
    model = build_model(cfg, "mse")
    x = torch.rand(4, 1, 10, 10).round()
    mu, logvar = torch.full((4, 32), 3.0), torch.full((4, 32), -24.0)
    torch.manual_seed(3)
    lw = model.log_weights(x, 5, (mu, logvar))  # (4, 5)
    torch.manual_seed(3)
    eps = torch.randn(4, 5, 32)  # the same draws
    z = mu.unsqueeze(1) + torch.exp(0.5 * logvar).unsqueeze(1) * eps  # as the model forms it
    with torch.no_grad():
        log_px = model.log_px(model._decoder(z.reshape(20, 32), None), x.repeat_interleave(5, 0))
    q = Normal(mu.double().unsqueeze(1), torch.exp(0.5 * logvar.double()).unsqueeze(1))
    log_q = q.log_prob(q.loc + q.scale * eps.double()).sum(-1)  # exact, in float64
    log_p = Normal(0.0, 1.0).log_prob(z.double()).sum(-1)
    ref = log_px.double().reshape(4, 5) + log_p - log_q
    torch.testing.assert_close(lw.double(), ref, rtol=0, atol=1e-3)


def test_evaluation_is_deterministic():
    model = small_vae()
    batches = Batches(_test_images(), 50, shuffle=False, binarize="static")
    a = evaluate_vae(model, batches, k=20, seed=5, progress=False)
    b = evaluate_vae(model, batches, k=20, seed=5, progress=False)
    assert a == b
    assert a["nll"] <= -a["elbo"] + 1.0  # log p(x) >= ELBO, up to sampling noise
    assert a["nll"] > 0  # binary pixels under a Bernoulli: p(x) <= 1
    x_all = torch.cat([x for x, _ in batches])
    with torch.no_grad():
        recon = model.decode(model.posterior(x_all)[0])  # the posterior mean's reconstruction
    assert a["recon_mse_per_pixel"] == pytest.approx(float(F.mse_loss(recon, x_all)), rel=1e-5)
    assert a["bits_per_dim"] == pytest.approx(a["nll"] / (36 * math.log(2)))
    # standard error over images: the first half's NLL differs from the whole's by about
    # one standard error (σ/√100 − σ/√200 apart); /n instead of /√n would fail this
    half = Batches(_test_images().limit(100), 50, shuffle=False, binarize="static")
    h = evaluate_vae(model, half, k=20, seed=5, progress=False)
    assert 0 < a["nll_stderr"] < 0.1 * abs(a["nll"])
    assert abs(h["nll"] - a["nll"]) < 4 * a["nll_stderr"]
    # the record names what decides the draws besides the seed; the model is left in the
    # mode it was in
    assert (a["batch_size"], a["max_rows"], a["device"]) == (50, 1024, "cpu")
    model.train()
    evaluate_vae(model, batches, k=2, progress=False)
    assert model.training
    # active units: Var over the test set of the posterior mean > 0.01. Make unit 0 dead
    # (μ constant), put unit 1 at Var 0.05 and unit 2 at Var 0.005: exactly 1 is active
    mu = torch.cat([model.posterior(x)[0] for x, _ in batches])  # (N, Z) posterior means
    scale = torch.tensor([0.0, 0.05, 0.005]).div(mu.var(dim=0)).sqrt()  # (Z,)

    class Rescaled(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            mu, logvar = self.inner(x).chunk(2, dim=1)
            return torch.cat([mu * scale, logvar], dim=1)

    model.encoder = Rescaled(model.encoder)
    assert evaluate_vae(model, batches, k=2, progress=False)["active_units"] == 1
    grey = Batches(_test_images(), 50, shuffle=False, binarize="none")
    assert evaluate_vae(model, grey, k=2, progress=False)["bits_per_dim"] is None
    # one image has no spread across the test set: neither number is defined (NaN > 0.01
    # read as "0 active units", and a standard error of 0.0)
    one = evaluate_vae(model, Batches(_test_images().limit(1), 1, shuffle=False), k=2)
    assert one["active_units"] is None and one["nll_stderr"] is None


TINY_VAE = ["model.kind=vae", "model.widths=[64,32]", "model.bottleneck=2", "data.limit=2000",
            "data.test_limit=200", "data.binarize=dynamic", "train.batch_size=100", "train.lr=1e-3",
            "model.activation=tanh"]  # fmt: skip


@pytest.fixture(scope="module")
def trained_vae(mnist_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("vae") / "run"
    cfg = load_config(None, TINY_VAE + ["train.epochs=3"])
    return train_loop.train(cfg, out, cache=mnist_cache, progress=False, log=lambda s: None)


def test_cli_train_eval_sample(trained_vae, mnist_cache, tmp_path, capsys):
    metrics = runs_folder.RunFolder(trained_vae).read_metrics()
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert cli.main(["eval", str(trained_vae), "--k", "50", "--limit", "100", "--cache",
                     str(mnist_cache), "--no-progress", "--max-rows", "700"]) == 0  # fmt: skip
    out, err = capsys.readouterr()
    assert "nll" in out and "bits_per_dim" in out and "active_units" in out
    assert "on the first 100 test images with k = 50 importance samples per image" in err
    record = json.loads((trained_vae / "eval.json").read_text())[-1]
    assert (record["k"], record["max_rows"], record["batch_size"]) == (50, 700, 100)
    png, npz = tmp_path / "s.png", tmp_path / "s.images"  # written under exactly that name
    assert (
        cli.main(["sample", str(trained_vae), "-n", "16", "--out", str(png), "--npz", str(npz)])
        == 0
    )
    import numpy as np

    arr = np.load(npz)["images"]
    assert arr.shape == (16, 28, 28, 1) and arr.dtype == np.uint8 and png.exists()
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    capsys.readouterr()
    assert cli.main(["sample", str(trained_vae), "--out", str(blocker / "s.png")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vaelab: error: ") and err.count("\n") == 1 and "a-file" in err


def test_data_of_another_image_shape_is_refused(trained_vae, tmp_path, capsys):

    cache = tmp_path / "cache"
    tiny = ImageDataset(torch.zeros(8, 1, 4, 4, dtype=torch.uint8), name="mnist")
    data_cache.save_dataset("mnist", {"train": tiny, "test": tiny}, cache)
    for argv in (["eval", str(trained_vae), "--k", "2"], ["plot", str(trained_vae), "recon"]):
        assert cli.main([*argv, "--cache", str(cache)]) == 1
        assert "holds 1x4x4 images, but the model takes 1x28x28" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("figure", ["samples", "manifold", "interpolate", "traverse", "latent"])
def test_vae_figures(trained_vae, mnist_cache, tmp_path, figure):
    out = tmp_path / f"{figure}.png"
    assert (
        cli.main(["plot", str(trained_vae), figure, "--out", str(out), "--cache", str(mnist_cache)])
        == 0
    )
    assert out.stat().st_size > 1000


def test_manifold_decodes_the_prior_quantiles_in_picture_order(trained_vae, tmp_path, monkeypatch):
    """Row by row: z_1 rises along a row, z_2 falls down the rows (up is up), both over the
    2.5 %…97.5 % quantiles the title names; the figure decodes exactly those codes."""

    z = viz_figures.quantile_codes(3)
    lo, hi = -1.959964, 1.959964
    torch.testing.assert_close(z, torch.tensor([[lo, hi], [0, hi], [hi, hi], [lo, 0], [0, 0], [hi, 0],
                                                [lo, lo], [0, lo], [hi, lo]]), atol=1e-5, rtol=0)  # fmt: skip
    seen = []
    real = VAE.decode
    monkeypatch.setattr(VAE, "decode", lambda self, z, c=None: seen.append(z) or real(self, z, c))
    viz_figures.manifold_figure([("t", trained_vae)], tmp_path / "m.png", n=4)
    torch.testing.assert_close(seen[-1], viz_figures.quantile_codes(4))
    for n in (1, 0):
        with pytest.raises(VaelabError, match="n ≥ 2"):
            viz_figures.quantile_codes(n)


def test_interpolation_of_a_small_test_split(
    trained_vae, mnist_cache, tmp_path, monkeypatch, capsys
):
    """Fewer than 16 test images give fewer rows (it was an IndexError); one is an error."""

    real = viz_figures._test_split
    for limit, code in ((5, 0), (1, 1)):
        monkeypatch.setattr(
            viz_figures, "_test_split", lambda run, cache, _l=limit: real(run, cache, _l)
        )
        argv = ["plot", str(trained_vae), "interpolate", "--out", str(tmp_path / f"{limit}.png"),
                "--cache", str(mnist_cache)]  # fmt: skip
        assert cli.main(argv) == code
    assert "interpolation needs two test images" in capsys.readouterr().err
    assert (tmp_path / "5.png").exists() and not (tmp_path / "1.png").exists()


def test_condition_of_codes_digitwise_only_when_the_classes_are():
    from vaelab.errors import ConfigError

    # one-hot classes '1', '10', '2' … '9' (sorted as text): '0' is no class and no digit code
    names = sorted(str(i) for i in range(1, 11))
    vae = small_vae(conditional=True, classes=names, widths=[32])
    assert vae.cond_table.shape == (10, 10)
    torch.testing.assert_close(vae.condition_of(["10"]), vae.cond_table[1:2])
    with pytest.raises(ConfigError, match="unknown label '0'"):
        vae.condition_of(["0"])
    assert not digitwise(["²", "3"]) and digitwise(["07", "42"])  # ASCII digits only
    # digit classes of one length: unseen numbers get their digit code
    vae = small_vae(conditional=True, classes=["12", "34"], widths=[32])
    torch.testing.assert_close(vae.condition_of(["31"])[0].reshape(2, 10).argmax(1),
                               torch.tensor([3, 1]))  # fmt: skip


def test_ae_prior_is_the_codes_gaussian_and_samples_follow_it():
    """Codes with a non-diagonal covariance through a decoder whose logits are the code:
    fit_prior recovers mean and covariance, and logit(samples) have covariance T²·Σ."""
    from vaelab.models.ae import Autoencoder

    g = torch.Generator().manual_seed(0)
    A = torch.tensor([[1.0, 0.0], [0.8, 0.6]])  # Σ = A Aᵀ, correlated
    z = torch.randn(4000, 2, generator=g) @ A.T + torch.tensor([0.5, -1.0])  # the codes
    x = z.reshape(4000, 1, 1, 2)  # the encoder below reads them back
    ae = Autoencoder(nn.Flatten(), nn.Unflatten(1, (1, 1, 2)))
    ae.fit_prior(x)
    mean, chol = ae.prior.mean, ae.prior.scale_tril
    torch.testing.assert_close(mean, z.mean(0))
    torch.testing.assert_close(chol @ chol.T, torch.cov(z.T), atol=1e-5, rtol=1e-4)
    out = ae.sample(20000, generator=torch.Generator().manual_seed(1), temperature=0.5)
    back = torch.logit(out.reshape(-1, 2).double())  # (n, 2) the drawn codes
    # sampling error of a 2x2 covariance from 20,000 draws: about 1 %
    torch.testing.assert_close(
        torch.cov(back.T).float(), 0.25 * torch.cov(z.T), atol=0.02, rtol=0.03
    )
    torch.testing.assert_close(back.mean(0).float(), z.mean(0), atol=0.02, rtol=0)


def test_ae_samples_from_a_fitted_gaussian(mnist_cache, tmp_path, capsys):
    cfg_overrides = ["model.widths=[32]", "data.limit=200", "data.test_limit=50", "train.epochs=1"]
    cfg = load_config(None, cfg_overrides)
    run = train_loop.train(
        cfg, tmp_path / "ae", cache=mnist_cache, progress=False, log=lambda s: None
    )
    png = tmp_path / "x.png"
    assert cli.main(["sample", str(run), "--out", str(png), "--cache", str(mnist_cache)]) == 0
    assert png.exists()
    # the Gaussian is fitted to the codes of the training images in [0, 1]
    from vaelab.data.batches import heldout_batches, load_split
    from vaelab.generate import load_generator
    from vaelab.thesis.images import normalize

    _, ae = load_generator(run, mnist_cache, fit_images=500)
    with torch.no_grad():
        codes = ae.encode(normalize(load_split("mnist", "train", mnist_cache, 500).images))
    torch.testing.assert_close(ae.prior.mean, codes.mean(0))
    chol = ae.prior.scale_tril
    torch.testing.assert_close(chol @ chol.T, torch.cov(codes.T), rtol=1e-3, atol=1e-4)
    # … and of binarised ones for an AE that trained on those (grey codes would not match)
    cfg_bin = load_config(None, [*cfg_overrides, "data.binarize=static"])
    run_bin = train_loop.train(cfg_bin, tmp_path / "ae-bin", cache=mnist_cache, progress=False,
                          log=lambda s: None)  # fmt: skip
    _, ae_bin = load_generator(run_bin, mnist_cache, fit_images=500)
    grey = load_split("mnist", "train", mnist_cache, 500)
    binary = next(iter(heldout_batches(grey, "static", batch_size=500)))[0]
    assert set(binary.unique().tolist()) == {0.0, 1.0}
    with torch.no_grad():
        torch.testing.assert_close(ae_bin.prior.mean, ae_bin.encode(binary).mean(0))
    assert cli.main(["sample", str(run), "--label", "3", "--cache", str(mnist_cache)]) == 1
    assert "conditional" in capsys.readouterr().err
    assert Path(run, "model.safetensors").exists()
    # the manifold of an AE decodes the quantiles of the Gaussian fitted to its codes
    manifold = tmp_path / "m.png"
    assert (
        cli.main(
            ["plot", str(run), "manifold", "--out", str(manifold), "--cache", str(mnist_cache)]
        )
        == 0
    )
    assert manifold.exists()


def test_manifold_of_a_conditional_vae(mnist_cache, tmp_path, capsys):
    """A 2-D conditional VAE's manifold decodes the grid under its first class (it was a
    'needs a label to decode' error that `vaelab plot` gave no way to act on)."""
    cfg = load_config(None, ["model.kind=vae", "model.conditional=true", "model.widths=[32]",
                             "data.limit=200", "data.test_limit=50", "data.binarize=dynamic",
                             "train.epochs=1"])  # fmt: skip
    run = train_loop.train(
        cfg, tmp_path / "cvae", cache=mnist_cache, progress=False, log=lambda s: None
    )
    out = tmp_path / "m.png"
    argv = ["plot", str(run), "manifold", "--out", str(out), "--cache", str(mnist_cache)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert out.stat().st_size > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ae_fits_its_prior_on_the_gpu():
    """fit_prior keeps the codes' device (its jitter term was made on the CPU)."""
    ae = build_model(ModelConfig(image_shape=[1, 6, 6], widths=[16], bottleneck=3), "mse")
    ae = ae.to("cuda")
    ae.fit_prior(torch.rand(50, 1, 6, 6, device="cuda"))
    assert ae.prior.mean.device.type == ae.prior.scale_tril.device.type == "cuda"
    assert ae.sample(4).shape == (4, 1, 6, 6)


@pytest.mark.parametrize("name", ["bernoulli", "gaussian", "continuous_bernoulli"])
@pytest.mark.parametrize("binary", [True, False])
def test_log_prob_of_k_draws_per_image_against_torch_distributions(name, binary):
    """likelihood(name).log_prob_k (no repeated images; for binary Bernoulli images a
    log-sigmoid pass) against torch.distributions per draw, and against log_prob on images
    repeated k times."""
    from vaelab.models.likelihoods import likelihood

    torch.manual_seed(0)
    b, k = 3, 4
    x = torch.rand(b, 1, 5, 6)
    x = (x > 0.5).float() if binary else x
    logits = torch.randn(b * k, 1, 5, 6) * 4
    log_sigma = torch.tensor(-1.0)
    lik = likelihood(name)
    got = lik.log_prob_k(logits, x, k, log_sigma)  # (B, k)
    xk = x.repeat_interleave(k, dim=0)
    torch.testing.assert_close(got, lik.log_prob(logits, xk, log_sigma).reshape(b, k))
    if name == "bernoulli":  # its own k-draw form: bf16 logits are summed in x's fp32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rounded = lik.log_prob_k(logits.bfloat16(), x, k, log_sigma)
        assert rounded.dtype == torch.float32
        exact = lik.log_prob(logits.bfloat16().float(), xk, log_sigma).reshape(b, k)
        torch.testing.assert_close(rounded, exact)
    if name == "bernoulli":  # grey values: the cross-entropy, torch's own
        ref = (Bernoulli(logits=logits).log_prob(xk) if binary else
               -F.binary_cross_entropy_with_logits(logits, xk, reduction="none"))  # fmt: skip
        torch.testing.assert_close(got, ref.sum((1, 2, 3)).reshape(b, k))
