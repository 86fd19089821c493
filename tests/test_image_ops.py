"""Image operators (Def 1.3.9–1.3.13) against independent references and PyTorch."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from vaelab.thesis.images import ImageLayer, avg_pool, conv2d, max_pool, min_pool


def _conv_reference(x: torch.Tensor, k: torch.Tensor, stride: int) -> torch.Tensor:
    """Eq. 1.9 summed term by term: (ψ_1)_ij = Σ_{c,m,n} (ψ_0)_{c, s·i+m, s·j+n} k_{c,mn}."""
    _, _, h, w = x.shape
    c_out, _, s1, s2 = k.shape
    h_out, w_out = (h - s1) // stride + 1, (w - s2) // stride + 1
    out = torch.zeros(x.shape[0], c_out, h_out, w_out, dtype=x.dtype)
    for m in range(s1):
        for n in range(s2):
            window = x[:, :, m : m + stride * (h_out - 1) + 1 : stride,
                       n : n + stride * (w_out - 1) + 1 : stride]  # fmt: skip
            out += torch.einsum("bchw,oc->bohw", window, k[:, :, m, n])
    return out


@st.composite
def images_and_window(draw):
    b, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    p1, p2 = draw(st.integers(1, h)), draw(st.integers(1, w))
    stride = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    x = torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x, (p1, p2), stride, seed


@settings(max_examples=30, deadline=None)
@given(images_and_window(), st.integers(1, 3))
def test_conv2d_is_eq_1_9(case, c_out):
    x, (s1, s2), stride, seed = case
    g = torch.Generator().manual_seed(seed + 1)
    k = torch.randn(c_out, x.shape[1], s1, s2, generator=g, dtype=torch.float64)
    out = conv2d(x, k, stride)
    h_out, w_out = (x.shape[2] - s1) // stride + 1, (x.shape[3] - s2) // stride + 1
    assert out.shape == (x.shape[0], c_out, h_out, w_out)
    torch.testing.assert_close(out, _conv_reference(x, k, stride))
    torch.testing.assert_close(out, F.conv2d(x, k, stride=stride))


@settings(max_examples=30, deadline=None)
@given(images_and_window())
def test_pools_against_torch(case):
    x, window, stride, _ = case
    h_out = (x.shape[2] - window[0]) // stride + 1
    w_out = (x.shape[3] - window[1]) // stride + 1
    avg = avg_pool(x, window, stride)
    assert avg.shape == (*x.shape[:2], h_out, w_out)
    torch.testing.assert_close(avg, F.avg_pool2d(x, window, stride=stride))
    torch.testing.assert_close(max_pool(x, window, stride), F.max_pool2d(x, window, stride=stride))
    torch.testing.assert_close(
        min_pool(x, window, stride), -F.max_pool2d(-x, window, stride=stride)
    )
    torch.testing.assert_close(min_pool(x, window, stride), -max_pool(-x, window, stride))


def test_single_channel_kernel_and_int_window():
    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    k = torch.tensor([[1.0, 0.0], [0.0, -1.0]])  # ψ_{i,j} − ψ_{i+1,j+1}: not flipped
    torch.testing.assert_close(conv2d(x, k), torch.full((1, 1, 4, 4), -6.0))
    torch.testing.assert_close(avg_pool(x, 5), torch.full((1, 1, 1, 1), 12.0))
    torch.testing.assert_close(
        max_pool(x, 2, stride=2), torch.tensor([[[[6.0, 8.0], [16.0, 18.0]]]])
    )
    torch.testing.assert_close(min_pool(x, (1, 5)), torch.arange(0.0, 25.0, 5).reshape(1, 1, 5, 1))


def test_operators_are_differentiable():
    x = torch.randn(2, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: conv2d(a, b, stride=2), (x, k))
    assert torch.autograd.gradcheck(lambda a: avg_pool(a, (2, 3), stride=2), (x,))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x: avg_pool(x, 6), r"larger than the image \(5, 5\)"),
        (lambda x: max_pool(x, (2, 6)), "larger"),
        (lambda x: min_pool(x, 0), "window"),
        (lambda x: avg_pool(x, 2, stride=0), "stride"),
        (lambda x: avg_pool(x[0], 2), r"\(B, C, H, W\)"),
        (lambda x: max_pool(x.to(torch.uint8), 2), "float"),
        (lambda x: conv2d(x, torch.ones(3, 3)), "input channels"),
        (lambda x: conv2d(x, torch.ones(1, 2, 6, 1)), "larger"),
        (lambda x: conv2d(x, torch.ones(3)), "kernel"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.rand(1, 2, 5, 5))


def test_image_layer_with_learned_convolution():
    torch.manual_seed(0)
    layer = ImageLayer(2, 4, (3, 2), stride=2, activation="tanh")
    x = torch.randn(3, 2, 7, 6)
    expected = torch.tanh(F.conv2d(x, layer.kernel, layer.bias, stride=2))  # φ̂(Tψ + b)
    torch.testing.assert_close(layer(x), expected)
    layer(x).sum().backward()
    assert layer.kernel.grad is not None and layer.bias.grad is not None


def test_image_layer_with_a_given_operator():
    pool = ImageLayer(out_channels=2, operator=partial(max_pool, window=2), activation="relu")
    x = torch.randn(1, 2, 4, 4)
    torch.testing.assert_close(
        pool(x), torch.relu(F.max_pool2d(x, 2, 1) + pool.bias.view(1, 2, 1, 1))
    )
    conv = nn.Conv2d(1, 3, 3)
    layer = ImageLayer(operator=conv, bias=False, activation="identity")
    assert {id(p) for p in layer.parameters()} == {id(p) for p in conv.parameters()}
    x = torch.randn(2, 1, 5, 5)
    torch.testing.assert_close(layer(x), conv(x))


def test_image_layer_rejects_bad_configuration():
    with pytest.raises(ValueError, match="in_channels"):
        ImageLayer(None, 3)
    with pytest.raises(ValueError, match="out_channels"):
        ImageLayer(operator=partial(avg_pool, window=2))
    with pytest.raises(ValueError, match="callable"):
        ImageLayer(operator=3, bias=False)
    with pytest.raises(ValueError, match="unknown activation"):
        ImageLayer(1, 1, activation="gelu")
    # an operator decides its own windows: a stride or kernel would be silently ignored
    pool = partial(max_pool, window=2)
    for kw in ({"stride": 5}, {"kernel_size": 9}, {"kernel_size": 3}, {"in_channels": 2}):
        with pytest.raises(ValueError, match="an operator layer takes none of them"):
            ImageLayer(out_channels=2, operator=pool, **kw)
    with pytest.raises(ValueError, match="with bias=False it takes none"):
        ImageLayer(out_channels=2, operator=pool, bias=False)
    # biases for 3 channels after an operator that keeps 2: named, not a broadcast error
    layer = ImageLayer(out_channels=3, operator=pool)
    with pytest.raises(ValueError, match=r"gave shape \(1, 2, 3, 3\), not \(B, 3"):
        layer(torch.randn(1, 2, 4, 4))
