"""`vaelab reproduce thesis`: the MNIST experiments of thesis §2.3 (Algorithm 4) with one
command: fully connected autoencoders with bottleneck n_b ∈ {2, 3}, each trained once
with Adam and once with AMSGrad (learning rate 3·10⁻⁴, batch 512, MSE), and Figures
2.4-2.10 with Adam on the left and AMSGrad on the right.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from vaelab.config import load_config
from vaelab.data.cache import fetch
from vaelab.device import resolve_device
from vaelab.files import atomic_write
from vaelab.runs.folder import RunFolder
from vaelab.train.groups import fuses, run_state, train_group
from vaelab.train.loop import hms
from vaelab.train.setup import setup_data, setup_model
from vaelab.train.state import finished
from vaelab.train.step import step_function
from vaelab.viz.figures import latent_figure, loss_figure, reconstruction_figure

PRESETS = {"demo": 3, "default": 50, "full": 10_000}
OPTIMIZERS = {"adam": "Adam", "amsgrad": "AMSGrad"}
BOTTLENECKS = (2, 3)


def thesis_config(optimizer: str, bottleneck: int, epochs: int, device: str = "cpu"):
    """The config of one of the four runs: the defaults of :class:`~vaelab.config.Config`
    are the thesis's setting (see configs/mnist_ae.toml), in fp32 as the thesis computed."""
    return load_config(None, [f"train.optimizer={optimizer}", f"model.bottleneck={bottleneck}",
                              f"train.epochs={epochs}", f"train.device={json.dumps(device)}",
                              'train.precision="fp32"'])  # fmt: skip


def projected_seconds(
    epochs: int, cache=None, fuse: bool = False, steps: int = 30, device: str = "cpu"
) -> float:
    """Time ``steps`` training steps (fused: of both optimizers' models at once) and
    project the four runs' total."""
    opts = OPTIMIZERS if fuse else ["adam"]
    cfgs = [thesis_config(opt, 2, epochs, device) for opt in opts]
    batches = setup_data(cfgs[0], cache, also=cfgs[1:])[0]
    made = [setup_model(c, batches.device) for c in cfgs]
    step = step_function([m for m, _ in made], [o for _, o in made])
    t0, done = time.perf_counter(), 0
    while done < steps:
        for x, y in batches:
            losses = step(x, y)  # (M, B), on the device
            done += 1
            if done == 5:
                losses.sum().item()  # wait for the device (CUDA queues work ahead)
                t0 = time.perf_counter()  # leave out warm-up
            if done == steps:
                losses.sum().item()
                break
    per_step = (time.perf_counter() - t0) / (steps - 5)
    return per_step * len(batches) * epochs * len(OPTIMIZERS) * len(BOTTLENECKS) / len(cfgs)


def reproduce_thesis(
    out: Path,
    preset: str = "default",
    epochs: int | None = None,
    cache=None,
    progress: bool = True,
    fuse: str = "auto",
    device: str = "cpu",
) -> Path:
    """Train the four models (or continue them where a previous call stopped), write the
    figures and ``reproduction.md`` into ``out``; returns the report's path. ``fuse``
    ("auto": on accelerators; "on"; "off") decides whether the Adam and AMSGrad models of
    each bottleneck train together in one fused step (:func:`~vaelab.train.groups.train_group`),
    with the same results as one by one, on ``device`` ("cpu", "cuda", …)."""
    epochs = epochs or PRESETS[preset]
    resolve_device(device, "--device")  # before any download or file
    fetch("mnist", cache=cache)
    fused = fuses(fuse, thesis_config("adam", 2, epochs, device))
    rows = [(opt, nb, out / f"{opt}-nb{nb}") for nb in BOTTLENECKS for opt in OPTIMIZERS]
    left = sum(_epochs_left(thesis_config(opt, nb, epochs, device), d) for opt, nb, d in rows)
    what = f"reproducing thesis §2.3: 2 optimizers x bottleneck {{2, 3}}, {epochs} epochs each"
    if left == 0:  # a call after the runs ended: only the figures and the report
        print(f"{what}: all four runs are trained; writing the figures and the report")
    else:
        # the timed steps are the whole job's; a resumed call has only ``left`` epochs to go
        estimate = projected_seconds(epochs, cache, fused, device=device) * left / (4 * epochs)
        print(f"{what}{', fused in pairs' if fused else ''}; projected training time "
              f"{hms(estimate)} for the {left:,} epochs left, on this machine")  # fmt: skip
    for nb in BOTTLENECKS:  # the two optimizers' models of one shape train fused
        print(f"--- n_b = {nb}: {' and '.join(OPTIMIZERS.values())}")
        group = [(thesis_config(opt, nb, epochs, device), d) for opt, b, d in rows if b == nb]
        train_group([c for c, _ in group], [d for _, d in group], cache, progress, fuse)
    figures = _figures(out, cache)
    report = _report(out, rows, figures, epochs)
    print(f"wrote {report} and {len(figures)} figures in {out}")
    return report


def _epochs_left(cfg, out: Path) -> int:
    """Epochs that run ``out`` still has to train under ``cfg`` (all of them when new)."""
    state = run_state(cfg, out)
    return cfg.train.epochs if state is None else 0 if finished(cfg, state) else cfg.train.epochs - state["epoch"]  # fmt: skip


def _figures(out: Path, cache) -> list[Path]:
    paths = []
    for nb in BOTTLENECKS:
        panels = [
            (f"{name}, $n_b$ = {nb}", out / f"{opt}-nb{nb}") for opt, name in OPTIMIZERS.items()
        ]
        paths.append(latent_figure(panels, out / f"latent_nb{nb}.png", cache))
        paths.append(reconstruction_figure(panels, out / f"recon_nb{nb}.png", cache))
        paths.append(loss_figure(panels, out / f"loss_nb{nb}.png"))
    return paths


def _report(out: Path, rows, figures: list[Path], epochs: int) -> Path:
    """The table of the four runs; a wall time is marked where its run trained fused with
    its pair (the metrics record how many models each epoch stepped), since it is then the
    pair's, not the run's own."""
    table, any_fused = [], False
    for opt, nb, run_dir in rows:
        records = RunFolder(run_dir).read_metrics()
        last, fused = records[-1], sum(r.get("models", 1) > 1 for r in records)
        any_fused = any_fused or fused > 0
        mark = "" if not fused else " (fused)" if fused == len(records) else f" (fused {fused}/{len(records)} epochs)"  # fmt: skip
        table.append(
            f"| {OPTIMIZERS[opt]} | {nb} | {last['epoch']} | {last['train_loss']:.3f} | "
            f"{last['test_loss']:.3f} | {last['test_loss'] / 784:.5f} | {hms(last['seconds'])}{mark} |"
        )
    lines = [
        "# Thesis §2.3 reproduced: linear autoencoders on MNIST",
        "",
        "Fully connected encoder 784-512-256-128-n_b with ReLU, mirrored decoder with a sigmoid "
        "output, MSE summed over the 784 pixels (Ex 2.2.2), learning rate 3e-4, batch 512, "
        f"{epochs} epochs (the thesis: 10,000). MSE per image; per pixel = /784."
        + (
            " A wall time marked fused is its pair's: the Adam and AMSGrad models of that n_b "
            "trained together in one fused step."
            if any_fused
            else ""
        ),
        "",
        "| optimizer | n_b | epochs | train MSE | test MSE | test MSE per pixel | wall time |",
        "|---|---|---|---|---|---|---|",
        *table,
        "",
        "Figures (Adam left, AMSGrad right):",
        "",
    ]
    lines += [f"- [{p.name}]({p.name})" for p in figures]
    text = ("\n".join(lines) + "\n").encode()
    return atomic_write(out / "reproduction.md", lambda f: f.write(text))
