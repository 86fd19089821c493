"""Figures of trained runs: latent space scatter (Figures 2.4, 2.7, 2.8 of the thesis),
reconstructions per digit (2.5, 2.9) and training progress (2.6, 2.10).

Every figure takes a list of (title, run folder) panels, so the thesis's "Adam on the
left, AMSGrad on the right" and a single run's figure are the same code.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from vaelab.data.batches import Batches  # noqa: E402
from vaelab.errors import VaelabError, is_count  # noqa: E402
from vaelab.files import atomic_write  # noqa: E402
from vaelab.generate import generate, load_generator  # noqa: E402
from vaelab.runs.folder import RunFolder  # noqa: E402
from vaelab.runs.load import load_run, load_test_batches  # noqa: E402
from vaelab.thesis.images import make_grid  # noqa: E402

DIGITS = [str(d) for d in range(10)]

Panels = Sequence[tuple[str, str | Path]]


@torch.no_grad()
def encode_dataset(model: torch.nn.Module, batches: Batches) -> torch.Tensor:
    """Latent codes (N, n_b) of every image of ``batches``, in order."""
    return torch.cat([model.encode(x, model.condition(y)) for x, y in batches])


def _cond(model, data: Batches, index) -> torch.Tensor | None:
    """Condition vectors of the examples at ``index`` (None for unconditional models)."""
    return model.condition(None if data.labels is None else data.labels[index])


def _latent_run(run_dir: str | Path) -> tuple:
    """(config, model) of a run whose model has a latent space (not a classifier)."""
    cfg, model = load_run(run_dir)
    if not model.can("encode"):
        raise VaelabError(f"{run_dir} holds a {cfg.model.kind}, which has no latent space to plot")
    return cfg, model


def _test_split(run_dir: str | Path, cache: str | Path | None, limit: int = 0) -> tuple:
    """(config, model, test batches) of a run: the images as its test loss saw them."""
    cfg, model = _latent_run(run_dir)
    return cfg, model, load_test_batches(cfg, cache, limit)


def class_colours(n: int) -> dict:
    """scatter() colour arguments for class labels 0…n−1: one distinct colour per class for
    up to 20 classes, each class's colour band centred on its tick in the colour bar."""
    if n <= 1:
        return {}
    if n > 20:
        return {"cmap": "viridis"}
    table = matplotlib.colormaps["tab10" if n <= 10 else "tab20"].colors[:n]
    return {"cmap": ListedColormap(table), "vmin": -0.5, "vmax": n - 0.5}


def latent_figure(panels: Panels, out: str | Path, cache=None, limit: int = 10_000) -> Path:
    """Scatter of the encoded test split coloured by label, with a colour bar. A 2-D
    latent gives one panel per run; a 3-D latent two viewing angles per run (two rows)."""
    loaded = [(title, *_test_split(run, cache, limit)) for title, run in panels]
    dims = {cfg.model.bottleneck for _, cfg, _, _ in loaded}
    if len(dims) != 1 or dims.pop() not in (2, 3):
        shown = ", ".join(sorted(map(str, dims | set())))
        raise VaelabError(f"plot latent shows codes of 2 or 3 dimensions (the same for every run), "
                          f"not {shown}: plot traverse or interpolate show any")  # fmt: skip
    three_d = loaded[0][1].model.bottleneck == 3
    views = [(25, -60), (10, 30)] if three_d else [None]
    fig = plt.figure(figsize=(5.2 * len(loaded), 4.4 * len(views)))
    for col, (title, _cfg, model, data) in enumerate(loaded):
        z = encode_dataset(model, data).numpy()
        c = data.labels.cpu().numpy() if data.labels is not None else None
        colours = class_colours(len(data.data.classes) if c is not None else 0)
        for row, view in enumerate(views):
            idx = row * len(loaded) + col + 1
            if three_d:
                ax = fig.add_subplot(len(views), len(loaded), idx, projection="3d")
                sc = ax.scatter(z[:, 0], z[:, 1], z[:, 2], c=c, s=1.5, alpha=0.6, **colours)
                ax.view_init(*view)
                ax.set_title(f"{title}  (elev {view[0]}°, azim {view[1]}°)", fontsize=10)
            else:
                ax = fig.add_subplot(1, len(loaded), idx)
                sc = ax.scatter(z[:, 0], z[:, 1], c=c, s=1.5, alpha=0.6, **colours)
                ax.set_xlabel("$z_1$")
                ax.set_ylabel("$z_2$")
                ax.set_title(title, fontsize=10)
            if c is not None:
                names = list(data.data.classes)
                bar = fig.colorbar(sc, ax=ax, label="digit" if names == DIGITS else "class",
                                   shrink=0.8, ticks=range(len(names)) if len(names) <= 20 else None)  # fmt: skip
                if 0 < len(names) <= 20:
                    bar.set_ticklabels(names)
    return _save(fig, out)


@torch.no_grad()
def reconstruction_figure(panels: Panels, out: str | Path, cache=None, per_class: int = 10) -> Path:
    """For each class (digit) a row of ``per_class`` test originals, then their
    reconstructions beside them (fewer per row when the test split has fewer; unlabelled
    data: rows of consecutive images)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 3.6), squeeze=False)
    for ax, (title, run) in zip(axes[0], panels, strict=True):
        _, model, data = _test_split(run, cache)
        picks, n = _per_class(data, per_class)
        x = data.images[picks]  # (rows·n, C, H, W)
        recon = model.reconstruct(x, _cond(model, data, picks))
        rows = [torch.cat([x[i : i + n], recon[i : i + n]]) for i in range(0, len(picks), n)]
        grid = make_grid(torch.cat(rows), nrow=2 * n, padding=1)
        shown = _show(ax, grid)
        ax.axvline(grid.shape[1] / 2 - 0.5, color="tab:red", lw=1.2)
        ax.set_title(f"{title}: originals | reconstructions{shown}", fontsize=10)
        ax.set_axis_off()
    return _save(fig, out)


def _per_class(data: Batches, n: int) -> tuple[torch.Tensor, int]:
    """(indices, m): the first m examples of each class that has m, class by class, with
    m = n or the size of the largest class when that is smaller (unlabelled data: up to
    10 rows of m consecutive examples)."""
    size = len(data.data)
    if n < 1 or size == 0:
        raise VaelabError(f"no examples to show ({n} per class of {size})")
    if data.labels is None:
        m = min(n, size)
        return torch.arange(min(size // m, 10) * m), m
    labels = data.labels.cpu()
    by_class = [torch.nonzero(labels == k).flatten() for k in range(int(labels.max()) + 1)]
    m = min(n, max(len(idx) for idx in by_class))
    return torch.cat([idx[:m] for idx in by_class if len(idx) >= m]), m


def loss_figure(panels: Panels, out: str | Path, cache=None) -> Path:
    """Training progress: epoch against training loss (and test loss), log scale."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (title, run) in zip(axes[0], panels, strict=True):
        metrics = RunFolder(run, writer=False).read_metrics()
        if not metrics:
            raise VaelabError(f"{run} has no metrics.jsonl yet")
        epochs = [m["epoch"] for m in metrics]
        train_loss = [m["train_loss"] for m in metrics]
        tested = [(m["epoch"], m["test_loss"]) for m in metrics if m["test_loss"] is not None]
        test_loss = [v for _, v in tested]  # train.test_every > 1 leaves epochs untested
        ax.plot(epochs, train_loss, label="training loss")
        ax.plot([e for e, _ in tested], test_loss, "--", label="test loss")
        if all(v is not None and v > 0 for v in train_loss + test_loss):
            ax.set_yscale("log")  # only positive losses have a logarithm
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss per image")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, out)


def png_bytes(fig, dpi: int = 110) -> bytes:
    """``fig`` laid out and rendered as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def _save(fig, out: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``out`` (exactly that name), atomically, and close it."""
    data = png_bytes(fig)
    return atomic_write(Path(out), lambda f: f.write(data))


FIGURES = {"latent": latent_figure, "recon": reconstruction_figure, "loss": loss_figure}


# --------------------------------------------------------------------------------------
# Generative figures (VAE): samples, the 2-D manifold, interpolation, latent traversals
# --------------------------------------------------------------------------------------


def _show(ax, picture) -> str:
    """Draw a (H, W, C) uint8 picture: grey for one channel, colour for three; of any other
    count the first channel in grey. Returns what the title should add (nothing, or which
    channel is shown)."""
    channels = picture.shape[2]
    if channels in (1, 3):
        grey = channels == 1
        ax.imshow(picture.squeeze(-1) if grey else picture, cmap="gray" if grey else None,
                  vmin=0, vmax=255)  # fmt: skip
        return ""
    ax.imshow(picture[..., 0], cmap="gray", vmin=0, vmax=255)
    return f" (channel 1 of {channels})"


def _image_figure(picture, title: str, out: str | Path, scale: float = 0.02) -> Path:
    """Show a :func:`make_grid` picture with a title."""
    h, w = picture.shape[:2]
    fig, ax = plt.subplots(figsize=(max(3.0, w * scale), max(3.0, h * scale) + 0.4))
    ax.set_title(title + _show(ax, picture), fontsize=10)
    ax.set_axis_off()
    return _save(fig, out)


@torch.no_grad()
def samples_figure(panels: Panels, out: str | Path, cache=None, n: int = 64, seed: int = 0) -> Path:
    """``n`` new images decoded from prior draws z ~ N(0, I) (an autoencoder: from a Gaussian
    fitted to its codes; a conditional model: labels drawn uniformly)."""

    (title, run), *_ = panels
    _, model = load_generator(run, cache)
    x = generate(model, n, None, seed)
    return _image_figure(make_grid(x, nrow=int(math.ceil(math.sqrt(n))), padding=1),
                         f"{title}: {n} samples from the prior", out)  # fmt: skip


def rows_figure(rows: Sequence[tuple[str, torch.Tensor]], title: str, out: str | Path) -> Path:
    """One row of images (N, C, H, W) per source, labelled with its name on the left."""
    label = 0.07 * max(len(name) for name, _ in rows) + 0.2  # inches for the names at 9 pt
    fig, axes = plt.subplots(len(rows), 1, figsize=(8.0 + label, 0.85 * len(rows) + 0.5),
                             squeeze=False)  # fmt: skip
    fig.subplots_adjust(left=label / (8.0 + label), right=0.98)  # the names stay inside
    for ax, (name, images) in zip(axes[:, 0], rows, strict=True):
        _show(ax, make_grid(images, nrow=len(images), padding=1))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        ax.yaxis.set_label_coords(-0.01, 0.5)  # right-aligned beside the row
    axes[0, 0].set_title(title, fontsize=10)
    return _save(fig, out)


def quantile_codes(n: int) -> torch.Tensor:
    """(n², 2) codes of the manifold grid, row by row: the 2.5 %…97.5 % quantiles of
    N(0, 1), z_1 from low to high along a row and z_2 from high to low down the rows (so
    up in the picture is up in z_2)."""
    if not is_count(n, 2):
        raise VaelabError(f"the manifold grid needs n ≥ 2 quantiles per axis, got {n!r}")
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.025, 0.975, n))  # (n,)
    zy, zx = torch.meshgrid(q.flip(0), q, indexing="ij")  # (n, n) each
    return torch.stack([zx.reshape(-1), zy.reshape(-1)], dim=1)  # (n², 2)


@torch.no_grad()
def manifold_figure(panels: Panels, out: str | Path, cache=None, n: int = 20) -> Path:
    """For a 2-D latent: decoded images on an n x n grid of the prior's quantiles (Kingma &
    Welling 2014, Figure 4); a conditional VAE's under its first class, so the grid shows
    the style that z carries for one label."""
    (title, run), *_ = panels
    cfg, model = _latent_run(run)
    if cfg.model.bottleneck != 2:
        raise VaelabError(
            f"the manifold figure needs a 2-D latent; {run} has {cfg.model.bottleneck}"
        )
    _, model = load_generator(run, cache)  # with its prior (fitted ex post for an AE)
    z = model.prior.from_standard(quantile_codes(n))  # (n², 2) on the prior
    if z is None:
        raise VaelabError(f"the prior of {run} has no quantiles to lay out as a grid")
    what = model.prior.title
    c, label = None, ""
    if model.classes:  # conditional: one label for the whole grid
        c = model.condition_of(model.classes[:1]).expand(len(z), -1)  # (n², D)
        label = f", label {model.classes[0]!r}"
    return _image_figure(make_grid(model.decode(z, c), nrow=n, padding=0),
                         f"{title}: decoded {what} quantiles 2.5%…97.5%{label}", out)  # fmt: skip


@torch.no_grad()
def interpolation_figure(
    panels: Panels, out: str | Path, cache=None, pairs: int = 8, steps: int = 10
) -> Path:
    """Rows of latent-space interpolations between pairs of test images (ends: the
    originals)."""
    (title, run), *_ = panels
    _, model, data = _test_split(run, cache)
    pairs = min(pairs, len(data.data) // 2)  # a small test split gives fewer rows
    if pairs < 1:
        raise VaelabError(f"interpolation needs two test images; {run}'s test split has "
                          f"{len(data.data)}")  # fmt: skip
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(data.data), generator=g)[: 2 * pairs]
    x = data.images[idx]
    c = _cond(model, data, idx)  # conditional models: interpolate under the first image's label
    rows = [torch.cat([x[2 * i : 2 * i + 1],
                       model.interpolate(x[2 * i], x[2 * i + 1], steps, None if c is None else c[2 * i : 2 * i + 1]),
                       x[2 * i + 1 : 2 * i + 2]]) for i in range(pairs)]  # fmt: skip
    under = "" if c is None else ", each under its left image's label"
    return _image_figure(make_grid(torch.cat(rows), nrow=steps + 2, padding=1),
                         f"{title}: interpolations (first and last columns: originals){under}", out)  # fmt: skip


@torch.no_grad()
def traversal_figure(
    panels: Panels, out: str | Path, cache=None, steps: int = 11, span: float = 3.0
) -> Path:
    """One row per latent dimension: the code of a test image with that dimension swept from
    −span to +span (others fixed)."""
    (title, run), *_ = panels
    _, model, data = _test_split(run, cache)
    c0 = _cond(model, data, slice(0, 1))
    z0 = model.encode(data.images[:1], c0)  # (1, Z)
    zdim = z0.shape[1]
    sweep = torch.linspace(-span, span, steps)
    z = z0.repeat(zdim * steps, 1)  # (Z·steps, Z)
    for d in range(zdim):
        z[d * steps : (d + 1) * steps, d] = sweep
    cz = None if c0 is None else c0.expand(len(z), -1)
    return _image_figure(make_grid(model.decode(z, cz), nrow=steps, padding=1),
                         f"{title}: traversal of each of {zdim} latent dims over ±{span}", out)  # fmt: skip


FIGURES.update(
    samples=samples_figure,
    manifold=manifold_figure,
    interpolate=interpolation_figure,
    traverse=traversal_figure,
)
