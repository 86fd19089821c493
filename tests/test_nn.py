"""Activations, dense networks, encoders/decoders and composition (§1.1, §2.1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vaelab.thesis.nn import (
    ACTIVATIONS,
    MLP,
    Composite,
    activation,
    check_decoder_widths,
    check_encoder_widths,
    compose,
    decoder_mlp,
    encoder_mlp,
)

# Example 1.1.2 written out by hand, independent of torch's modules.
REFERENCE = {
    "relu": lambda t: torch.where(t > 0, t, torch.zeros_like(t)),
    "leaky_relu": lambda t: torch.where(t > 0, t, 0.01 * t),
    "sigmoid": lambda t: 1.0 / (1.0 + torch.exp(-t)),
    "tanh": lambda t: (torch.exp(t) - torch.exp(-t)) / (torch.exp(t) + torch.exp(-t)),
    "identity": lambda t: t,
}


def test_activation_registry_has_the_thesis_names():
    assert set(ACTIVATIONS) == {"relu", "leaky_relu", "sigmoid", "tanh", "identity"}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_activations_match_their_formulas(name):
    t = torch.linspace(-4, 4, 101, dtype=torch.float64)
    torch.testing.assert_close(activation(name)(t), REFERENCE[name](t))


def test_leaky_relu_alpha():
    t = torch.linspace(-3, 3, 31)
    out = activation("leaky_relu", alpha=0.2)(t)
    torch.testing.assert_close(out, torch.where(t > 0, t, 0.2 * t))


def test_unknown_activation_lists_known_names():
    with pytest.raises(ValueError, match="swish.*leaky_relu.*relu"):
        activation("swish")


def test_activation_rejects_unknown_option():
    with pytest.raises(ValueError, match="alpha"):
        activation("relu", alpha=0.1)


def test_mlp_is_the_composition_of_phi_layers():
    torch.manual_seed(0)
    net = MLP([5, 7, 3], activation="tanh", out_activation="sigmoid")
    assert net.widths == (5, 7, 3) and net.depth == 2
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(5, 7), (7, 3)]
    x = torch.randn(4, 5)
    (w1, b1), (w2, b2) = [(m.weight, m.bias) for m in linears]
    h1 = torch.tanh(x @ w1.T + b1)  # H_1(x) = φ̂(W_1 x + b_1), eq. 1.2
    expected = torch.sigmoid(h1 @ w2.T + b2)
    torch.testing.assert_close(net(x), expected)


def test_mlp_output_activation_defaults_to_identity_and_alpha_reaches_leaky_relu():
    torch.manual_seed(1)
    net = MLP([3, 4, 2], activation="leaky_relu", alpha=0.3)
    lin1, lin2 = [m for m in net if isinstance(m, nn.Linear)]
    x = torch.randn(6, 3)
    pre = x @ lin1.weight.T + lin1.bias
    expected = torch.where(pre > 0, pre, 0.3 * pre) @ lin2.weight.T + lin2.bias
    torch.testing.assert_close(net(x), expected)


def test_single_layer_mlp_uses_the_output_activation():
    net = MLP([3, 2], activation="relu", out_activation="sigmoid")
    assert net.depth == 1
    assert (net(torch.randn(5, 3)) > 0).all()


@pytest.mark.parametrize("widths", [[5], [], [5, 0], [5, 2.5], [5, -1], "ab", None, [3, True]])
def test_mlp_rejects_bad_widths(widths):
    with pytest.raises(ValueError, match="widths"):
        MLP(widths)


def test_encoder_never_grows_decoder_never_shrinks():
    assert check_encoder_widths([784, 400, 400, 20]) == (784, 400, 400, 20)
    assert check_decoder_widths([20, 400, 784]) == (20, 400, 784)
    with pytest.raises(ValueError, match=r"\(784, 400, 500, 20\)"):
        check_encoder_widths([784, 400, 500, 20])
    with pytest.raises(ValueError, match=r"\(20, 400, 300\)"):
        check_decoder_widths([20, 400, 300])
    with pytest.raises(ValueError):
        encoder_mlp([2, 3])
    with pytest.raises(ValueError):
        decoder_mlp([3, 2])
    assert isinstance(encoder_mlp([6, 4, 2]), MLP) and decoder_mlp([2, 4, 6]).widths == (2, 4, 6)


def test_compose_adds_depths_and_keeps_parameter_order():
    enc, dec = encoder_mlp([6, 4, 2]), decoder_mlp([2, 4, 6])
    ae = compose(enc, dec)
    assert isinstance(ae, Composite) and isinstance(ae, nn.Sequential)
    assert ae.depth == 4 and ae.widths == (6, 4, 2, 4, 6)
    expected = [*enc.parameters(), *dec.parameters()]  # θ = (θ_1, θ_2), Lemma 2.1.3
    got = list(ae.parameters())
    assert len(got) == len(expected) and all(a is b for a, b in zip(got, expected, strict=True))
    x = torch.randn(3, 6)
    torch.testing.assert_close(ae(x), dec(enc(x)))


def test_compose_many_and_nested():
    f1, f2, f3 = MLP([5, 4]), MLP([4, 4, 3]), MLP([3, 2, 2, 1])
    flat, nested = compose(f1, f2, f3), compose(compose(f1, f2), f3)
    assert flat.depth == nested.depth == 1 + 2 + 3
    assert flat.widths == nested.widths == (5, 4, 4, 3, 2, 2, 1)
    x = torch.randn(2, 5)
    torch.testing.assert_close(flat(x), f3(f2(f1(x))))
    torch.testing.assert_close(nested(x), flat(x))


def test_compose_counts_layers_of_parts_without_depth():
    plain = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 4))
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.Flatten())
    assert compose(plain, nn.ReLU()).depth == 2 + 1
    assert compose(conv, nn.Linear(8, 2)).depth == 2 + 1
    assert compose(MLP([6, 4]), plain).widths is None  # not every part has widths


def test_compose_rejects_mismatched_dimensions():
    with pytest.raises(ValueError, match="output dimension 2.*input dimension 3"):
        compose(MLP([6, 2]), MLP([3, 6]))


def test_compose_rejects_bad_parts():
    with pytest.raises(ValueError):
        compose()
    with pytest.raises(ValueError, match="int"):
        compose(MLP([2, 2]), 3)


def test_tanh_without_autograd_is_torch_tanh():
    """The 2σ(2t) − 1 form used without autograd against torch.tanh, over the whole range
    (saturated tails, the origin); with autograd it is torch.tanh exactly, gradient included."""
    from vaelab.thesis.nn import activation

    phi = activation("tanh")
    t = torch.cat([torch.linspace(-30, 30, 100001), torch.tensor([0.0, 1e-30, -1e-8])])
    with torch.no_grad():
        torch.testing.assert_close(phi(t), torch.tanh(t), atol=2.4e-7, rtol=0)
    leaf = t.clone().requires_grad_()
    out = phi(leaf)
    assert torch.equal(out, torch.tanh(t))
    out.sum().backward()
    torch.testing.assert_close(leaf.grad, 1 - torch.tanh(t) ** 2)
