"""The VQ-VAE and its code prior, against brute-force and hand computations."""

import pytest
import torch
from torch import distributions as D

from helpers import trained_resumed_alike
from vaelab import cli
from vaelab.config import CodePriorConfig
from vaelab.models.code_prior import CodeTransformer
from vaelab.models.vq import EMA_DECAY, RESTART_AFTER, VQVAE, Quantizer

CLASSES = [str(d) for d in range(10)]


def test_nearest_entry_against_a_brute_force_distance_matrix():
    torch.manual_seed(0)
    quant = Quantizer(37, 5, ema=False)
    flat = torch.randn(300, 5) * 0.05
    brute = torch.cdist(flat.double(), quant.codebook.double()).argmin(1)
    assert torch.equal(quant.nearest(flat), brute)


def test_the_straight_through_gradient_is_the_decoders_at_the_quantised_point():
    torch.manual_seed(0)
    model = VQVAE(
        [1, 8, 8], [4], 3, 16, 0.25, False, "mse", CodePriorConfig(layers=1, width=8, heads=2), []
    )
    x = torch.rand(4, 1, 8, 8)
    z = model.encoder(x).detach().requires_grad_()
    q, idx, _, _ = model.quantizer(z)
    model.decoder(q).square().sum().backward()
    at_q = model.quantizer.codebook[idx].permute(0, 3, 1, 2).detach().requires_grad_()
    model.decoder(at_q).square().sum().backward()
    torch.testing.assert_close(z.grad, at_q.grad)  # the encoder receives dL/dq at q


def test_the_ema_update_against_a_hand_computation():
    quant = Quantizer(3, 2, ema=True).train()
    quant.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]))
    quant.embed_sum.copy_(quant.codebook)
    z = torch.tensor([[0.1, -0.1], [0.9, 1.2], [1.1, 0.8], [0.2, 0.0]])  # -> entries 0, 1, 1, 0
    grid = z.T.reshape(1, 2, 2, 2)  # (B=1, D=2, H=2, W=2) whose raster order is z's rows
    with torch.enable_grad():
        quant(grid)
    g = EMA_DECAY
    size = torch.tensor([g + (1 - g) * 2, g + (1 - g) * 2, g])  # cluster sizes after one step
    sums = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]) * g
    sums[0] += (1 - g) * (z[0] + z[3])
    sums[1] += (1 - g) * (z[1] + z[2])
    n = size.sum()
    smoothed = (size + 1e-5) / (n + 3e-5) * n
    torch.testing.assert_close(quant.codebook, sums / smoothed[:, None])


def test_an_entry_unused_for_long_is_reseeded_from_the_batch():
    torch.manual_seed(0)
    quant = Quantizer(4, 2, ema=False).train()
    quant.idle[3] = RESTART_AFTER - 1
    z = torch.randn(1, 2, 3, 3) * 1e-3  # near entries 0-2's range, never far codebook[3]
    quant.codebook.data[3] = 100.0
    with torch.enable_grad():
        quant(z)
    assert int(quant.idle[3]) == 0
    rows = z.permute(0, 2, 3, 1).reshape(-1, 2)
    assert any(torch.equal(quant.codebook[3].detach(), r) for r in rows)


def test_the_code_prior_is_causal_and_its_log_prob_sums_the_categoricals():
    torch.manual_seed(0)
    prior = CodeTransformer(CodePriorConfig(layers=2, width=16, heads=2), 7, 6, labels=3).eval()
    codes, labels = torch.randint(7, (5, 6)), torch.randint(3, (5,))
    logits = prior.logits(codes, labels)
    for s in range(6):  # changing code s moves only the positions after it
        other = codes.clone()
        other[:, s] = (other[:, s] + 1) % 7
        changed = (prior.logits(other, labels) - logits).abs().amax(dim=(0, 2)) > 1e-6
        assert not changed[: s + 1].any() and (s == 5 or changed[s + 1 :].any())
    expected = D.Categorical(logits=logits).log_prob(codes).sum(1)
    torch.testing.assert_close(prior.log_prob(codes, labels), expected)
    draws = prior.sample(4, labels[:4], torch.Generator().manual_seed(0))
    assert draws.shape == (4, 6) and draws.max() < 7


def test_trains_resumes_bit_for_bit_and_the_verbs(mnist_cache, tmp_path, capsys):
    sets = ["data.limit=300", "data.test_limit=100", "model.codebook=32",
            "model.code_prior.freeze_after=1", "train.batch_size=100"]  # fmt: skip
    run = trained_resumed_alike("configs/mnist_vq.toml", sets, tmp_path, mnist_cache)
    opts = ["--cache", str(mnist_cache)]
    assert cli.main(["eval", str(run), *opts]) == 0
    printed = capsys.readouterr().out
    assert "codebook_perplexity" in printed and "codebook_used" in printed
    assert (
        cli.main(["sample", str(run), "--label", "7", "-n", "8", "--out", str(tmp_path / "s.png")])
        == 0
    )
    assert cli.main(["sample", str(run), "--label", "x", "-n", "8"]) == 1
    assert cli.main(["plot", str(run), "recon", *opts]) == 0
    err = capsys.readouterr().err
    assert err.count("vaelab: error") == 1 and "Traceback" not in err


@pytest.mark.parametrize(("key", "says"), [("model.code_prior.width=10", "divisible"),
                                           ("model.channels=[8, 8, 8]", "halves"),
                                           ("model.code_prior.freeze_after=-1", ">= 0")])  # fmt: skip
def test_bad_settings_are_one_line(key, says, mnist_cache, tmp_path, capsys):
    assert cli.main(["train", "configs/mnist_vq.toml", "--set", key, "--set", "data.limit=10",
                     "--out", str(tmp_path / "r"), "--cache", str(mnist_cache)]) == 1  # fmt: skip
    assert says in capsys.readouterr().err


def test_after_freeze_after_only_the_prior_learns():
    torch.manual_seed(0)
    cfg = CodePriorConfig(layers=1, width=8, heads=2, freeze_after=3)
    model = VQVAE([1, 8, 8], [4], 3, 16, 0.25, False, "mse", cfg, []).train()
    for epoch, frozen in ((2, False), (3, True)):
        model.zero_grad(set_to_none=True)
        model.begin_epoch(epoch, 10)
        model.terms(torch.rand(4, 1, 8, 8))["loss"].sum().backward()
        assert (model.encoder[0].weight.grad is None) == frozen
        assert (model.quantizer.codebook.grad is None) == frozen
        assert model.code_prior.head.weight.grad is not None


def test_the_prior_of_a_conditional_model_is_the_marginal_over_its_labels():
    import math

    torch.manual_seed(0)
    model = VQVAE([1, 8, 8], [4], 3, 16, 0.25, False, "mse", CodePriorConfig(layers=1, width=8, heads=2),
                  ["a", "b", "c"]).eval()  # fmt: skip
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        codes = model.codes(x)
        each = torch.stack(
            [model.code_prior.log_prob(codes, torch.full((5,), y)) for y in range(3)]
        )
        expected = torch.logsumexp(each, 0) - math.log(3)
        torch.testing.assert_close(model.prior.log_prob(model.encode(x)), expected)
    with pytest.raises(Exception, match="2 labels for 3 samples"):
        model.sample(3, ["a", "b"])


def test_a_vq_vae_is_refused_on_several_processes():
    from vaelab.config import load_config
    from vaelab.errors import ConfigError
    from vaelab.train.distributed import check_processes

    cfg = load_config("configs/mnist_vq.toml", [])
    with pytest.raises(ConfigError, match="cannot train on several processes"):
        check_processes(None, cfg, None, None, 1)
