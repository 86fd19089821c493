"""Figures: exact output names, the loss plot's scale, reconstructions of small test splits."""

import json

import pytest
import torch

import vaelab.data.cache as data_cache
import vaelab.data.dataset as data_dataset
import vaelab.train.loop as train_loop
import vaelab.viz.figures as viz_figures
from vaelab import cli
from vaelab.config import load_config


def test_save_writes_a_png_under_exactly_the_name_given(tmp_path):
    fig, ax = viz_figures.plt.subplots()
    ax.plot([0, 1], [1, 0])
    out = viz_figures._save(fig, tmp_path / "figure")  # no suffix: matplotlib would append .png
    assert out == tmp_path / "figure" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["figure"]


@pytest.mark.parametrize("losses, scale", [([3.0, 2.0, 1.0], "log"), ([1.0, -0.5, -2.0], "linear")])
def test_loss_figure_uses_a_log_scale_only_for_positive_losses(
    tmp_path, monkeypatch, losses, scale
):
    records = [{"epoch": i + 1, "train_loss": v, "test_loss": v} for i, v in enumerate(losses)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    figures = []
    monkeypatch.setattr(viz_figures, "_save", lambda fig, out: figures.append(fig) or out)
    viz_figures.loss_figure([("run", tmp_path)], tmp_path / "loss.png")
    assert figures[0].axes[0].get_yscale() == scale


@pytest.fixture(scope="module")
def ae_run(mnist_cache, tmp_path_factory):
    cfg = load_config(None, ["model.widths=[32]", "data.limit=200", "data.test_limit=50",
                             "train.epochs=1", "train.batch_size=100"])  # fmt: skip
    out = tmp_path_factory.mktemp("ae") / "run"
    return train_loop.train(cfg, out, cache=mnist_cache, progress=False, log=lambda s: None)


@pytest.mark.parametrize(
    "labels",
    [torch.tensor([0, 0, 0, 1, 2]), torch.tensor([4, 4]), None],
    ids=["classes-smaller-than-a-row", "one-class", "unlabelled"],
)
def test_reconstructions_of_a_small_test_split(ae_run, mnist_small, tmp_path, labels):
    _, test = mnist_small
    n = 5 if labels is None else len(labels)
    small = data_dataset.ImageDataset(
        test.images[:n], labels, [str(i) for i in range(5)] if labels is not None else []
    )
    cache = tmp_path / "cache"
    data_cache.save_dataset("mnist", {"train": small, "test": small}, cache)
    out = tmp_path / "recon.png"
    argv = ["plot", str(ae_run), "recon", "--out", str(out), "--cache", str(cache)]
    assert cli.main(argv) == 0
    assert out.stat().st_size > 1000


@pytest.mark.parametrize("n", [3, 10, 15])
def test_class_colours_are_distinct_and_centred_on_their_ticks(n):
    """Label k gets the k-th colour of the table, and the colour bar's band of class k is
    centred on tick k (with tab10's default range 0…9 the bands drift off their ticks)."""
    import numpy as np
    from matplotlib.colors import Normalize

    kw = viz_figures.class_colours(n)
    cmap, norm = kw["cmap"], Normalize(kw["vmin"], kw["vmax"])
    assert cmap.N == n
    colours = [cmap(norm(k)) for k in range(n)]
    assert len(set(colours)) == n
    width = (kw["vmax"] - kw["vmin"]) / cmap.N
    centres = kw["vmin"] + (np.arange(n) + 0.5) * width
    np.testing.assert_allclose(centres, np.arange(n))
    assert viz_figures.class_colours(1) == {} and viz_figures.class_colours(30) == {
        "cmap": "viridis"
    }


@pytest.mark.parametrize(
    ("config", "shapes"),
    [("configs/mnist_ae.toml", [(1, 28, 28), (512,), (256,), (128,), (2,), (128,), (256,), (512,), (784,)]),
     ("configs/mnist_vae_iwae_arch.toml", [(1, 28, 28), (200,), (200,), (100,), (50,), (200,), (200,), (784,)]),
     ("configs/mnist_conv_ae.toml", [(1, 28, 28), (32, 28, 28), (64, 14, 14), (256,), (16,), (256,), (3136,),
                                     (32, 14, 14), (1, 28, 28)])],
)  # fmt: skip
def test_architecture_reads_the_layers_the_model_runs(config, shapes, tmp_path, capsys):
    """Layer widths in call order, the code z after a VAE's (μ, log σ²) head; PNG and SVG."""
    from vaelab.models.registry import build_model
    from vaelab.viz.architecture import trace_layers

    cfg = load_config(config, ["model.image_shape=[1, 28, 28]"])
    layers = trace_layers(build_model(cfg.model, cfg.train.loss), [1, 28, 28])
    assert [la.shape for la in layers] == shapes
    out = tmp_path / "net.png"
    assert cli.main(["plot", config, "architecture", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and b"<svg" in out.with_suffix(".svg").read_bytes()


def test_other_figures_of_a_config_file_are_one_line(capsys):
    assert cli.main(["plot", "configs/mnist_ae.toml", "latent"]) == 1
    assert "needs a trained run folder" in capsys.readouterr().err
