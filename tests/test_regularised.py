"""RAE and WAE-MMD (#17): the MMD estimator against a direct O(n²) sum and a known value,
the decoder penalties against autograd's Jacobian, and both families through the CLI."""

import json
from pathlib import Path

import pytest
import torch

from helpers import TINY_MNIST, trained_resumed_alike
from vaelab import cli
from vaelab.config import load_config
from vaelab.errors import ConfigError
from vaelab.models.registry import build_model
from vaelab.models.regularised import IMQ_SCALES, imq, mmd_per_example


def model(kind, *extra, loss="bce_sum"):
    cfg = load_config(None, [f"model.kind={kind}", "model.widths=[16]", "model.bottleneck=3",
                             "model.image_shape=[1,5,5]", *extra])  # fmt: skip
    return build_model(cfg.model, loss)


def direct_mmd(z, p):
    """The unbiased MMD² estimate by explicit loops over pairs and scales."""
    n, dim = z.shape

    def k(a, b):
        d2 = float(((a - b) ** 2).sum())
        return sum(2 * dim * s / (2 * dim * s + d2) for s in IMQ_SCALES)

    same = sum(k(z[i], z[j]) + k(p[i], p[j]) for i in range(n) for j in range(n) if i != j)
    cross = sum(k(z[i], p[j]) for i in range(n) for j in range(n))
    return same / (n * (n - 1)) - 2 * cross / n**2


def test_mmd_matches_the_direct_sum_and_a_known_value():
    torch.manual_seed(0)
    z, p = torch.randn(9, 4, dtype=torch.float64) + 0.5, torch.randn(9, 4, dtype=torch.float64)
    assert mmd_per_example(z, p).mean().item() == pytest.approx(direct_mmd(z, p), rel=1e-12)
    # point masses at a and b: MMD² = k(a,a) + k(b,b) − 2k(a,b) = Σ_s 2 − 2C_s/(C_s + ‖a−b‖²)
    a, b = torch.zeros(6, 2, dtype=torch.float64), torch.full((6, 2), 1.5, dtype=torch.float64)
    known = sum(2 - 2 * 4 * s / (4 * s + 4.5) for s in IMQ_SCALES)
    assert mmd_per_example(a, b).mean().item() == pytest.approx(known, rel=1e-12)
    assert mmd_per_example(a, a).abs().max().item() < 1e-12  # the same distribution: 0
    assert imq(a[:1], b[:1]).item() == pytest.approx(sum(4 * s / (4 * s + 4.5) for s in IMQ_SCALES))


def test_rae_terms_and_its_decoder_penalties():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 5, 5)
    l2 = model("rae", "model.beta=0.5", "model.penalty_weight=0.25")
    t = l2.terms(x)
    z = l2.encode(x)
    torch.testing.assert_close(t["code"], 0.5 * z.square().sum(1))
    theta = sum(p.square().sum() for p in l2.decoder.parameters())
    torch.testing.assert_close(t["decoder_penalty"], theta.expand(4))
    torch.testing.assert_close(t["loss"], t["reconstruction"] + 0.5 * t["code"] + 0.25 * theta)
    # gp: the mean of many one-draw estimates is ‖∂D/∂z‖²_F from autograd's Jacobian
    gp = model("rae", "model.decoder_penalty=gp")
    z = gp.encode(x).detach().requires_grad_()
    jac = [torch.autograd.functional.jacobian(lambda v: gp.decoder(v[None])[0], zi) for zi in z]
    frob = torch.stack([j.square().sum() for j in jac])  # (B,)
    est = torch.stack([gp.decoder_penalty(z, gp.decoder(z)) for _ in range(4000)]).mean(0)
    torch.testing.assert_close(est, frob.detach(), rtol=0.06, atol=0)
    with torch.no_grad():  # evaluated without gradients, it still has its value
        assert torch.isfinite(gp.terms(x)["decoder_penalty"]).all()
    with pytest.raises(ConfigError, match="decoder_penalty must be one of l2, gp, none"):
        model("rae", "model.decoder_penalty=l1")
    assert set(model("rae", "model.decoder_penalty=none").terms(x)) == {"loss", "reconstruction",
                                                                         "code"}  # fmt: skip


def test_wae_samples_from_its_prior_and_its_loss_is_reconstruction_plus_mmd():
    torch.manual_seed(0)
    wae = model("wae", "model.beta=10", loss="mse")
    assert wae.can("sample") and not wae.stages
    x = torch.rand(6, 1, 5, 5)
    torch.manual_seed(1)
    t = wae.terms(x)
    torch.testing.assert_close(t["loss"], t["reconstruction"] + 10 * t["mmd"])
    assert wae.sample(4, generator=torch.Generator().manual_seed(0)).shape == (4, 1, 5, 5)
    fitted = model("wae", "model.expost.components=3")  # then it samples from the mixture
    assert [s.name for s in fitted.stages] == ["expost_gmm"]
    with pytest.raises(ConfigError, match=r"model.expost needs model.kind = 'ae' or 'rae' or"):
        model("vae", "model.expost.components=3")


CONFIG = str(Path(__file__).parents[1] / "configs" / "mnist_ae.toml")


@pytest.mark.parametrize("kind, extra", [("rae", ["model.decoder_penalty=gp",
                                                  "model.expost.components=3"]),
                                         ("wae", ["train.loss=mse", "model.beta=10"])])  # fmt: skip
def test_rae_and_wae_train_resume_evaluate_and_sample(kind, extra, mnist_cache, tmp_path):
    straight = trained_resumed_alike(CONFIG, [*TINY_MNIST, f"model.kind={kind}", *extra],
                                     tmp_path, mnist_cache)  # fmt: skip
    cache = ["--cache", str(mnist_cache)]
    metrics = [json.loads(line) for line in (straight / "metrics.jsonl").open()]
    assert {"reconstruction"} <= set(metrics[-1]["test_terms"])
    run = str(straight)
    assert cli.main(["eval", run, "--limit", "50", *cache, "--no-progress"]) == 0
    assert cli.main(["sample", run, "-n", "9", "--out", str(tmp_path / "s.png"), *cache]) == 0
