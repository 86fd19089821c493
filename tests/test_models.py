import pytest
import torch
from torch import nn

from vaelab.config import ModelConfig
from vaelab.errors import ConfigError, VaelabError
from vaelab.models.ae import Autoencoder
from vaelab.models.registry import build_model
from vaelab.thesis.losses import bce, mse


def cfg(**kw):
    base = dict(image_shape=[1, 28, 28], widths=[64, 32], bottleneck=3)
    return ModelConfig(**{**base, **kw})


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("shape", [[1, 28, 28], [3, 17, 23]])
def test_verbs_and_shapes(arch, shape):
    torch.manual_seed(0)
    model = build_model(cfg(arch=arch, image_shape=shape, channels=[4, 8]), "mse")
    x = torch.rand(5, *shape)
    z = model.encode(x)
    assert z.shape == (5, 3)
    out = model.decode(z)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    assert torch.equal(model.reconstruct(x), model(x))
    assert model.objective(x).shape == (5,)


def test_objective_is_the_named_loss():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 28, 28)
    for loss, ref in (
        ("mse", lambda lg: mse(torch.sigmoid(lg), x)),
        ("bce", lambda lg: bce(lg, x)),
    ):
        model = build_model(cfg(), loss)
        logits = model.decoder(model.encoder(x))
        torch.testing.assert_close(model.objective(x), ref(logits))


def test_injected_networks():
    enc = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    dec = nn.Sequential(nn.Linear(2, 4), nn.Unflatten(1, (1, 2, 2)))
    model = Autoencoder(enc, dec, "mse")
    assert model.reconstruct(torch.rand(3, 1, 2, 2)).shape == (3, 1, 2, 2)
    with pytest.raises(ConfigError, match="unknown loss"):
        Autoencoder(enc, dec, "l7")


def test_width_rules_are_enforced():
    with pytest.raises(ConfigError, match=r"model.widths = \[32, 64\].*never grow"):
        build_model(cfg(widths=[32, 64]), "mse")
    with pytest.raises(ConfigError, match=r"model.widths = \[1000\].*784 inputs.*never grow"):
        build_model(cfg(widths=[1000]), "mse")  # 784 -> 1000 grows
    # conv: the rule applies to the flattened features (4 channels x 14 x 14 = 784)
    with pytest.raises(ConfigError, match=r"model.widths = \[1000\].*784 inputs.*never grow"):
        build_model(cfg(arch="conv", channels=[4], widths=[1000]), "mse")
    # ... which may be wider than the image: 16 x 4 x 4 = 256 features of a 1x8x8 image
    model = build_model(cfg(arch="conv", image_shape=[1, 8, 8], channels=[16], widths=[100]), "mse")
    assert model.encode(torch.rand(2, 1, 8, 8)).shape == (2, 3)
    with pytest.raises(ConfigError, match="bottleneck|widths"):
        build_model(cfg(bottleneck=0), "mse")
    with pytest.raises(ConfigError, match="unknown model.arch"):
        build_model(cfg(arch="rnn"), "mse")
    with pytest.raises(ConfigError, match="too many"):
        build_model(cfg(arch="conv", channels=[4] * 6), "mse")


@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_an_mlp_without_hidden_widths_must_say_it_is_linear(kind):
    """widths = [] silently trained an affine autoencoder whose activation was never used."""
    with pytest.raises(ConfigError, match=r"model.widths = \[\] leaves the mlp no hidden"):
        build_model(cfg(kind=kind, widths=[]), "mse")
    linear = build_model(cfg(kind=kind, widths=[], activation="identity"), "mse")
    layers = [m for m in linear.modules() if isinstance(m, nn.Linear)]
    assert len(layers) == 2  # one affine map each way
    # a conv encoder may go straight from its features to the bottleneck
    build_model(cfg(kind=kind, arch="conv", channels=[4], widths=[]), "mse")


def test_classifier_config_is_checked():
    base = dict(kind="classifier", arch="conv", channels=[4], widths=[16], classes=["0", "1"])
    assert build_model(cfg(**base), "mse").logits(torch.rand(3, 1, 28, 28)).shape == (3, 2)
    with pytest.raises(ConfigError, match="a classifier has model.arch = 'conv', got 'mlp'"):
        build_model(cfg(**{**base, "arch": "mlp"}), "mse")
    with pytest.raises(ConfigError, match=r"model.image_shape must be \(C, H, W\)"):
        build_model(cfg(**{**base, "image_shape": [28, 28]}), "mse")


def test_conditional_conv_vae_reads_its_label_planes():
    """A conditional conv VAE feeds the label as constant image planes to the encoder and
    as a code to the decoder: both outputs depend on the label, and the objective reaches
    every parameter."""
    torch.manual_seed(0)
    model = build_model(cfg(kind="vae", arch="conv", image_shape=[1, 8, 8], channels=[4],
                            widths=[32], conditional=True, classes=["0", "1", "2"]), "mse")  # fmt: skip
    x = torch.rand(5, 1, 8, 8)
    c0, c2 = model.condition_of(["0"] * 5), model.condition_of(["2"] * 5)
    assert not torch.allclose(model.posterior(x, c0)[0], model.posterior(x, c2)[0])
    z = torch.randn(5, 3)
    assert not torch.allclose(model.decode(z, c0), model.decode(z, c2))
    # each image reads its own label: relabelling image 0 moves its code only
    mixed = model.posterior(x, model.condition_of(["2", "0", "0", "0", "0"]))[0]
    torch.testing.assert_close(mixed[1:], model.posterior(x, c0)[0][1:])
    torch.testing.assert_close(mixed[:1], model.posterior(x, c2)[0][:1])
    model.objective(x, torch.tensor([0, 1, 2, 0, 1])).mean().backward()
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad
    )


def test_a_model_too_big_for_memory_is_refused_before_it_is_allocated():
    """100,000 conv channels make a 10-billion-parameter linear layer: sized on torch's meta
    device and refused in one line, instead of allocating (or thrashing) first."""
    with pytest.raises(VaelabError, match=r"10,056,\d{3},\d{3} parameters of 16 bytes need about"):
        build_model(cfg(arch="conv", channels=[100000], widths=[256]), "mse")
