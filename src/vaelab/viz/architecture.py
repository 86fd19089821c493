"""`vaelab plot RUN architecture`: the network drawn in the style of the thesis's Figures
1.1 and 2.1-2.3 — layers as columns of nodes (wide layers capped, with "⋮"), the
bottleneck marked, image layers as boxes with their shape — as PNG and SVG.

The layers are read from the model itself: a forward pass (encode, then decode) on one
zero image records, in call order, what each weight layer outputs, so the diagram is the
network that trains, whatever the family."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vaelab.files import atomic_write
from vaelab.viz.figures import _save, plt

SHOWN = 8
"""Nodes drawn per dense column at most: the first and last SHOWN // 2 around a "⋮"."""


@dataclass
class Layer:
    shape: tuple[int, ...]
    """the layer's output per image: (n,) dense, (C, H, W) image"""
    part: str
    """input, encoder or decoder"""
    name: str


@torch.no_grad()
def trace_layers(model: nn.Module, image_shape: list[int]) -> list[Layer]:
    """The input and every weight layer's output shape in call order of encode → decode."""
    layers = [Layer(tuple(image_shape), "input", "input")]
    part = ["encoder"]

    def hook(module, _inputs, output):
        out = output[0] if isinstance(output, tuple) else output
        name = type(module).__name__.replace("Transpose", "T")
        layers.append(Layer(tuple(out.shape[1:]), part[0], name))

    weights = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, weights)]
    try:
        x = torch.zeros(1, *image_shape)  # (1, C, H, W)
        c = (
            model.condition(torch.zeros(1, dtype=torch.long))
            if getattr(model, "conditional", False)
            else None
        )
        z = model.encode(x, c)  # (1, Z)
        part[0] = "decoder"
        model.decode(z, c)
    finally:
        for h in handles:
            h.remove()
    enc = [i for i, layer in enumerate(layers) if layer.part == "encoder"]
    if enc and layers[enc[-1]].shape != tuple(z.shape[1:]):  # a head of μ and log σ²: then z
        layers.insert(enc[-1] + 1, Layer(tuple(z.shape[1:]), "encoder", "z"))
    return layers


def architecture_figure(
    model: nn.Module, image_shape: list[int], title: str, out: Path
) -> list[Path]:
    """Draw the model's layers; writes ``out`` (PNG) and the same name .svg; returns both."""
    fig = draw_architecture(model, image_shape, title)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="svg")
    svg = atomic_write(Path(out).with_suffix(".svg"), lambda f: f.write(buf.getvalue()))
    return [_save(fig, out), svg]


def draw_architecture(model: nn.Module, image_shape: list[int], title: str):
    """The matplotlib figure of the model's layers (see the module docstring)."""
    layers = trace_layers(model, image_shape)
    bottleneck = max((i for i, la in enumerate(layers) if la.part == "encoder"), default=0)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(layers)), 4.6))
    prev: list[float] | None = None
    for i, layer in enumerate(layers):
        ys = _column(ax, i, layer, i == bottleneck)
        if prev is not None and ys and len(layer.shape) == 1 and len(prev) <= SHOWN:
            for y0 in prev:  # dense: every node of the last column to every node of this
                for y1 in ys:
                    ax.plot([i - 1, i], [y0, y1], color="0.75", lw=0.4, zorder=0)
        elif prev is not None:
            ax.annotate(
                "", (i - 0.25, 0), (i - 0.75, 0), arrowprops={"arrowstyle": "->", "color": "0.4"}
            )
        prev = ys if len(layer.shape) == 1 else [0.0]
    ax.set_xlim(-0.7, len(layers) - 0.3)
    ax.set_ylim(-5.6, 5.2)
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    return fig


def _column(ax, x: float, layer: Layer, bottleneck: bool) -> list[float]:
    """Draw one layer at x; returns the y of its drawn nodes (dense) or [] (image box)."""
    colour = "tab:red" if bottleneck else "tab:blue" if layer.part == "encoder" else "tab:green"
    if layer.part == "input":
        colour = "0.3"
    if len(layer.shape) == 3:  # an image layer: a box with its shape
        c, h, w = layer.shape
        height = 1.2 + 3.0 * min(h, 28) / 28
        ax.add_patch(
            plt.Rectangle((x - 0.3, -height / 2), 0.6, height, fc="white", ec=colour, lw=1.5)
        )
        ax.text(x, -height / 2 - 0.5, f"{c}×{h}×{w}", ha="center", va="top", fontsize=7)
        ax.text(x, 0, layer.name if layer.part != "input" else "image", ha="center", va="center",
                fontsize=6, rotation=90)  # fmt: skip
        return []
    (n,) = layer.shape
    drawn = n if n <= SHOWN else SHOWN
    ys = [4.0 - 8.0 * j / max(drawn - 1, 1) for j in range(drawn)] if drawn > 1 else [0.0]
    if n > SHOWN:  # the first and last nodes, and dots for the rest
        half = SHOWN // 2
        ys = ys[:half] + ys[-half:]
        ys = [y + 0.5 if j < half else y - 0.5 for j, y in enumerate(ys)]
        ax.text(x, 0, "⋮", ha="center", va="center", fontsize=14)
    ax.scatter([x] * len(ys), ys, s=70, c="white", edgecolors=colour, linewidths=1.5, zorder=2)
    label = f"{n}" + ("\nbottleneck z" if bottleneck else "")
    ax.text(x, -5.0, label, ha="center", va="top", fontsize=7, color=colour)
    return ys
