"""Figures of trained runs: latent space scatter (Figures 2.4, 2.7, 2.8 of the thesis),
reconstructions per digit (2.5, 2.9) and training progress (2.6, 2.10).

Every figure takes a list of (title, run folder) panels, so the thesis's "Adam on the
left, AMSGrad on the right" and a single run's figure are the same code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from vaelab.data import ImageDataset, load_dataset  # noqa: E402
from vaelab.errors import VaelabError  # noqa: E402
from vaelab.images import make_grid, normalize  # noqa: E402
from vaelab.runs import RunFolder, load_run  # noqa: E402

Panels = Sequence[tuple[str, str | Path]]


@torch.no_grad()
def encode_dataset(model: torch.nn.Module, data: ImageDataset, batch: int = 2048) -> torch.Tensor:
    """Latent codes (N, n_b) of every image of ``data``."""
    codes = [
        model.encode(normalize(data.images[i : i + batch])) for i in range(0, len(data), batch)
    ]
    return torch.cat(codes)


def _test_split(run_dir: str | Path, cache: str | Path | None) -> tuple:
    cfg, model = load_run(run_dir)
    data = load_dataset(cfg.data.name, cfg.data.test_split, cache)
    return cfg, model, data


def latent_figure(panels: Panels, out: str | Path, cache=None, limit: int = 10_000) -> Path:
    """Scatter of the encoded test split coloured by label, with a colour bar. A 2-D
    latent gives one panel per run; a 3-D latent two viewing angles per run (two rows)."""
    loaded = [(title, *_test_split(run, cache)) for title, run in panels]
    dims = {cfg.model.bottleneck for _, cfg, _, _ in loaded}
    if len(dims) != 1 or dims.pop() not in (2, 3):
        raise VaelabError("latent plots need runs with the same bottleneck of 2 or 3")
    three_d = loaded[0][1].model.bottleneck == 3
    views = [(25, -60), (10, 30)] if three_d else [None]
    fig = plt.figure(figsize=(5.2 * len(loaded), 4.4 * len(views)))
    for col, (title, _cfg, model, data) in enumerate(loaded):
        data = data.limit(limit)
        z = encode_dataset(model, data).numpy()
        c = data.labels.numpy() if data.labels is not None else None
        for row, view in enumerate(views):
            idx = row * len(loaded) + col + 1
            if three_d:
                ax = fig.add_subplot(len(views), len(loaded), idx, projection="3d")
                sc = ax.scatter(z[:, 0], z[:, 1], z[:, 2], c=c, cmap="tab10", s=1.5, alpha=0.6)
                ax.view_init(*view)
                ax.set_title(f"{title}  (elev {view[0]}°, azim {view[1]}°)", fontsize=10)
            else:
                ax = fig.add_subplot(1, len(loaded), idx)
                sc = ax.scatter(z[:, 0], z[:, 1], c=c, cmap="tab10", s=1.5, alpha=0.6)
                ax.set_xlabel("$z_1$")
                ax.set_ylabel("$z_2$")
                ax.set_title(title, fontsize=10)
            if c is not None:
                fig.colorbar(sc, ax=ax, ticks=range(10), label="digit", shrink=0.8)
    return _save(fig, out)


@torch.no_grad()
def reconstruction_figure(panels: Panels, out: str | Path, cache=None, per_class: int = 10) -> Path:
    """For each class (digit) a row of ``per_class`` test originals, then their
    reconstructions beside them."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 3.6), squeeze=False)
    for ax, (title, run) in zip(axes[0], panels, strict=True):
        _, model, data = _test_split(run, cache)
        picks = _per_class(data, per_class)
        x = normalize(data.images[picks])  # (K·n, C, H, W)
        recon = model.reconstruct(x)
        k = len(picks) // per_class
        rows = [torch.cat([x[i * per_class : (i + 1) * per_class],
                           recon[i * per_class : (i + 1) * per_class]]) for i in range(k)]  # fmt: skip
        grid = make_grid(torch.cat(rows), nrow=2 * per_class, padding=1)
        ax.imshow(grid.squeeze(-1), cmap="gray", vmin=0, vmax=255)
        ax.axvline(grid.shape[1] / 2 - 0.5, color="tab:red", lw=1.2)
        ax.set_title(f"{title}: originals | reconstructions", fontsize=10)
        ax.set_axis_off()
    return _save(fig, out)


def _per_class(data: ImageDataset, n: int) -> torch.Tensor:
    """Indices of the first ``n`` examples of each class, class by class."""
    if data.labels is None:
        return torch.arange(min(len(data), 10 * n))
    picks = [
        torch.nonzero(data.labels == k).flatten()[:n] for k in range(int(data.labels.max()) + 1)
    ]
    return torch.cat([p for p in picks if len(p) == n])


def loss_figure(panels: Panels, out: str | Path, cache=None) -> Path:
    """Training progress: epoch against training loss (and test loss), log scale."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (title, run) in zip(axes[0], panels, strict=True):
        metrics = RunFolder(run, writer=False).read_metrics()
        if not metrics:
            raise VaelabError(f"{run} has no metrics.jsonl yet")
        epochs = [m["epoch"] for m in metrics]
        ax.plot(epochs, [m["train_loss"] for m in metrics], label="training loss")
        ax.plot(epochs, [m["test_loss"] for m in metrics], "--", label="test loss")
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss per image")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, out)


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


FIGURES = {"latent": latent_figure, "recon": reconstruction_figure, "loss": loss_figure}
