"""The IAF posterior (#17): the autoregressive masks, log q against the log |det| of
autograd's Jacobian, and the family through the CLI."""

import json
from pathlib import Path

import pytest
import torch
from torch import distributions as D

from helpers import TINY_MNIST, trained_resumed_alike
from vaelab import cli
from vaelab.config import load_config
from vaelab.files import read_tensors
from vaelab.models.flows import MADE, IAFOptions, IAFPosterior
from vaelab.models.registry import build_model


def test_made_outputs_depend_only_on_earlier_inputs():
    torch.manual_seed(0)
    made = MADE(5, 12)
    with torch.no_grad():
        for p in made.parameters():
            p.normal_()  # no accidental zeros hide a dependence
    z, h = torch.randn(5), torch.randn(5)
    for part in (0, 1):  # m and s
        jac = torch.autograd.functional.jacobian(lambda v, i=part: made(v, h)[i], z)  # (Z, Z)
        assert (jac.triu() == 0).all()  # output i: no input j >= i
        assert (jac.tril(-1) != 0).sum() > 0  # and they do depend on the earlier ones


def test_log_q_is_the_base_density_less_the_log_det_of_the_flow():
    torch.manual_seed(0)
    dim = 4
    post = IAFPosterior(IAFOptions(flows=3, hidden=16), dim)
    with torch.no_grad():
        for p in post.parameters():
            p.normal_(0, 0.5)
    out = torch.randn(2, 3 * dim)
    q = post(out)
    torch.manual_seed(1)
    z, log_q = q.rsample_k(3)  # (2, 3, Z), (2, 3)
    torch.manual_seed(1)
    z0, _ = q.base.rsample_k(3)  # the same base draws
    for b in range(2):
        for j in range(3):
            jac = torch.autograd.functional.jacobian(lambda v, b=b: q.flow(v, q.h[b])[0], z0[b, j])
            base = D.Independent(D.Normal(q.base.mu[b], torch.exp(0.5 * q.base.logvar[b])), 1)
            expected = base.log_prob(z0[b, j]) - torch.linalg.slogdet(jac)[1]
            torch.testing.assert_close(log_q[b, j], expected, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(z[b, j], q.flow(z0[b, j], q.h[b])[0])
    one = q.rsample()
    assert q.log_prob(one).shape == (2,)
    with pytest.raises(NotImplementedError, match="its own draws"):
        q.log_prob(one.clone())


CONFIG = str(Path(__file__).parents[1] / "configs" / "mnist_vae.toml")


def test_an_iaf_vae_trains_resumes_and_evaluates(mnist_cache, tmp_path):
    sets = [*TINY_MNIST, "model.posterior.kind=iaf", "model.posterior.hidden=16"]
    cfg = load_config(CONFIG, [*sets, "model.image_shape=[1,28,28]"])
    assert build_model(cfg.model, "bce").encoder(torch.rand(1, 1, 28, 28)).shape == (1, 12)
    straight = trained_resumed_alike(CONFIG, sets, tmp_path, mnist_cache)
    assert any("q.steps" in k for k in read_tensors(straight / "model.safetensors")[0])
    run, cache = str(straight), ["--cache", str(mnist_cache)]
    assert cli.main(["eval", run, "--k", "20", "--limit", "40", *cache, "--no-progress"]) == 0
    record = json.loads((tmp_path / "straight" / "eval.json").read_text())[-1]
    assert record["nll"] <= -record["elbo"] + 1e-3
    assert cli.main(["sample", run, "-n", "4", "--out", str(tmp_path / "s.png"), *cache]) == 0
