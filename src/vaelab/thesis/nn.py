"""Neural networks as the thesis defines them (§1.1, §2.1): activation functions, dense
φ-networks, encoders and decoders, and their composition.

A φ-layer is H(x) = φ̂(Wx + b) (eq. 1.2, Def 1.1.4) — one ``nn.Linear`` followed by an
activation module. A φ-deep network of depth L is H_L ∘ … ∘ H_1 (eq. 1.3, Def 1.1.5), and
composing networks adds their depths and concatenates their parameters (Lemma 2.1.3,
Theorem 2.1.4).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from vaelab.errors import is_count

__all__ = [
    "ACTIVATIONS",
    "activation",
    "MLP",
    "check_encoder_widths",
    "check_decoder_widths",
    "encoder_mlp",
    "decoder_mlp",
    "Composite",
    "compose",
]


def _relu() -> nn.Module:
    return nn.ReLU()


def _leaky_relu(alpha: float = 0.01) -> nn.Module:
    return nn.LeakyReLU(negative_slope=float(alpha))


def _sigmoid() -> nn.Module:
    return nn.Sigmoid()


class Tanh(nn.Module):
    """φ(t) = tanh(t). Without autograd (evaluation, sampling) it is computed as 2σ(2t) − 1,
    the same function to 2e-7 absolute: torch's vectorised sigmoid is one fast pass on
    every CPU, while its tanh ran 10x slower than sigmoid on a 2-core AMD EPYC (1.9 against
    0.19 ns per value; benchmarks/RESULTS.md) and is 13 % of a k = 5000 evaluation there.
    With autograd it is torch.tanh, whose backward is one pass."""

    def forward(self, t: Tensor) -> Tensor:
        if torch.is_grad_enabled():  # (also inside torch.func transforms, which hide requires_grad)
            return torch.tanh(t)
        return torch.sigmoid(t * 2) * 2 - 1


def _tanh() -> nn.Module:
    return Tanh()


def _identity() -> nn.Module:
    return nn.Identity()


ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "relu": _relu,  # φ(t) = max{0, t}
    "leaky_relu": _leaky_relu,  # φ(t) = αt for t ≤ 0, t for t > 0
    "sigmoid": _sigmoid,  # φ(t) = 1 / (1 + e^{−t})
    "tanh": _tanh,
    "identity": _identity,  # the usual output activation (remark after Def 1.1.5)
}
"""Activation functions of Def 1.1.1 / Example 1.1.2, by name, as module factories."""


def activation(name: str, **kw: float) -> nn.Module:
    """The activation function φ called ``name`` (Def 1.1.1, Example 1.1.2) as a module.

    ``leaky_relu`` takes ``alpha`` (default 0.01), the slope for t ≤ 0.
    """
    factory = ACTIVATIONS.get(name) if isinstance(name, str) else None
    if factory is None:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}")
    accepted = set(inspect.signature(factory).parameters)
    unknown = sorted(set(kw) - accepted)
    if unknown:
        raise ValueError(
            f"activation {name!r} takes no option(s) {', '.join(unknown)}"
            f" (it takes: {', '.join(sorted(accepted)) or 'none'})"
        )
    return factory(**kw)


def _activation_with_alpha(name: str, alpha: float) -> nn.Module:
    """``activation(name)``, passing ``alpha`` only to activations that take it."""
    factory = ACTIVATIONS.get(name) if isinstance(name, str) else None
    if factory is not None and "alpha" in inspect.signature(factory).parameters:
        return activation(name, alpha=alpha)
    return activation(name)


def _check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    """Validate d_1, …, d_{L+1} of Def 1.1.5: at least two positive integers."""
    try:
        ws = tuple(widths)
    except TypeError:
        raise ValueError(
            f"widths must be a sequence of positive integers, got {widths!r}"
        ) from None
    if len(ws) < 2:
        raise ValueError(f"widths need an input and an output dimension, got {ws!r}")
    for w in ws:
        if not is_count(w):
            raise ValueError(f"widths must be positive integers, got {ws!r} (offending: {w!r})")
    return ws


class MLP(nn.Sequential):
    """The φ-deep neural network f_{φ,L,θ} = H_L ∘ … ∘ H_1 of Def 1.1.5 (eq. 1.3).

    ``widths`` = (d_1, …, d_{L+1}) gives L = len(widths) − 1 layers H_i(x) = φ̂_i(W_i x + b_i)
    (eq. 1.2). The hidden layers share ``activation``; the output layer H_L uses
    ``out_activation`` (often the identity, as the thesis remarks). ``alpha`` is the
    leaky-ReLU slope, used only where an activation takes it.
    """

    def __init__(
        self,
        widths: Sequence[int],
        activation: str = "relu",
        out_activation: str = "identity",
        alpha: float = 0.01,
    ) -> None:
        ws = _check_widths(widths)
        layers: list[nn.Module] = []
        depth = len(ws) - 1
        for i, (d_in, d_out) in enumerate(zip(ws[:-1], ws[1:], strict=True)):
            name = activation if i < depth - 1 else out_activation
            layers.append(nn.Linear(d_in, d_out))  # (B, d_i) -> (B, d_{i+1})
            layers.append(_activation_with_alpha(name, alpha))
        super().__init__(*layers)
        self.widths: tuple[int, ...] = ws
        self.depth: int = depth


def check_encoder_widths(widths: Sequence[int]) -> tuple[int, ...]:
    """Check n_i = d_1 ≥ … ≥ d_{L+1} = n_o: an encoder never grows (Def 2.1.1)."""
    ws = _check_widths(widths)
    for a, b in zip(ws[:-1], ws[1:], strict=True):
        if b > a:
            raise ValueError(f"encoder widths must never grow (Def 2.1.1), got {ws!r}: {a} -> {b}")
    return ws


def check_decoder_widths(widths: Sequence[int]) -> tuple[int, ...]:
    """Check n_i = d_1 ≤ … ≤ d_{L+1} = n_o: a decoder never shrinks (Def 2.1.2)."""
    ws = _check_widths(widths)
    for a, b in zip(ws[:-1], ws[1:], strict=True):
        if b < a:
            raise ValueError(
                f"decoder widths must never shrink (Def 2.1.2), got {ws!r}: {a} -> {b}"
            )
    return ws


def encoder_mlp(
    widths: Sequence[int],
    activation: str = "relu",
    out_activation: str = "identity",
    alpha: float = 0.01,
) -> MLP:
    """An encoding network f_e (Def 2.1.1): an :class:`MLP` whose widths never grow."""
    return MLP(check_encoder_widths(widths), activation, out_activation, alpha)


def decoder_mlp(
    widths: Sequence[int],
    activation: str = "relu",
    out_activation: str = "identity",
    alpha: float = 0.01,
) -> MLP:
    """A decoding network f_d (Def 2.1.2): an :class:`MLP` whose widths never shrink."""
    return MLP(check_decoder_widths(widths), activation, out_activation, alpha)


_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)


def _depth_of(net: nn.Module) -> int:
    """L of a part: its ``depth``, else its number of linear/convolution layers, else 1."""
    depth = getattr(net, "depth", None)
    if isinstance(depth, int) and not isinstance(depth, bool):
        return depth
    n_layers = sum(isinstance(m, _LAYER_TYPES) for m in net.modules())
    return n_layers or 1


class Composite(nn.Sequential):
    """The composition f = f_N ∘ … ∘ f_1 of networks (Lemma 2.1.3, Theorem 2.1.4).

    ``depth`` is L_1 + … + L_N, ``parameters()`` yields θ = (θ_1, …, θ_N) in order, and
    ``widths`` joins the parts' widths at the shared dimensions (``None`` unless every part
    exposes ``widths``). Build it with :func:`compose`.
    """

    def __init__(self, *nets: nn.Module) -> None:
        if not nets:
            raise ValueError("compose needs at least one network, got none")
        for i, net in enumerate(nets):
            if not isinstance(net, nn.Module):
                raise ValueError(f"compose takes torch modules; part {i} is {type(net).__name__}")
        for i, (f, g) in enumerate(zip(nets[:-1], nets[1:], strict=True)):
            wf, wg = getattr(f, "widths", None), getattr(g, "widths", None)
            if wf is not None and wg is not None and wf[-1] != wg[0]:
                raise ValueError(
                    f"cannot compose: part {i} has output dimension {wf[-1]} (widths {tuple(wf)})"
                    f" but part {i + 1} has input dimension {wg[0]} (widths {tuple(wg)})"
                )
        super().__init__(*nets)
        self.depth: int = sum(_depth_of(net) for net in nets)
        all_widths = [getattr(net, "widths", None) for net in nets]
        self.widths: tuple[int, ...] | None = None
        if all(w is not None for w in all_widths):
            joined = list(all_widths[0])
            for w in all_widths[1:]:
                joined.extend(w[1:])
            self.widths = tuple(joined)


def compose(*nets: nn.Module) -> Composite:
    """f_N ∘ … ∘ f_1 for nets = (f_1, …, f_N), applied left to right (Theorem 2.1.4).

    Raises ``ValueError`` when an output dimension does not match the next input dimension
    (checked where both parts expose ``widths``), as Lemma 2.1.3 requires d_{L_1} = d̃_1.
    """
    return Composite(*nets)
