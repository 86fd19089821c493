"""The peer row of `make bench`: vaelab against pythae 0.1.2, the library users would pick
instead, per epoch on the same data with the same settings.

pythae runs in its own virtual environment, made here on first use (``.bench/pythae``,
pinned versions, torch the same version as vaelab's), from benchmarks/pythae_driver.py;
vaelab runs as the ``vaelab train`` command a user types. Settings (the same on both sides,
not pythae's own defaults of latent 10, batch 64, lr 1e-4): a VAE with pythae's default MLP
networks for 1x28x28 (784-512-20, 20-512-784, ReLU), BCE summed over pixels, Adam 1e-3,
batch 128, the 60,000 grey-value training images, 1,000 test images evaluated after every
epoch. Both sides alternate (pythae, vaelab, pythae, vaelab, ...) and the medians of the
per-epoch seconds after the first epoch are compared.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".bench" / "pythae"
PINS = ["pythae==0.1.2", "pydantic==2.14.4", "numpy==2.4.6", "scipy==1.17.1",
        "scikit-learn==1.9.1", "imageio==2.38.2", "cloudpickle==3.1.3", "tqdm==4.70.1",
        "dataclasses==0.6"]  # fmt: skip
"""pythae and the versions of its dependencies the bench was measured with (torch: ours)."""

VAELAB = """[data]
name = "mnist"
binarize = "none"
test_limit = 1000

[model]
kind = "vae"
arch = "mlp"
widths = [512]
bottleneck = 20
activation = "relu"
likelihood = "bernoulli"

[train]
batch_size = 128
lr = 1e-3
optimizer = "adam"
"""
"""vaelab's side as a user's config: the same model, loss, optimizer, batch and evaluation."""


def pythae_python() -> Path:
    """The bench's pythae interpreter, made (once per set of pins) with pip."""
    python, stamp = VENV / "bin" / "python", VENV / ".pins"
    torch_pin = f"torch=={torch.__version__.split('+')[0]}"
    wanted = "\n".join([torch_pin, *PINS])
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"making pythae's virtual environment in {VENV} ({', '.join(PINS[:1] + [torch_pin])})")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    done = subprocess.run([*pip, torch_pin, *PINS], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError("pip could not install pythae: " + done.stderr.strip().splitlines()[-1])
    stamp.write_text(wanted)
    return python


def _epoch_seconds(ends: list[float]) -> list[float]:
    """Per-epoch seconds from the cumulative seconds at each epoch's end, less the first
    (start-up, first-touch allocation)."""
    return [b - a for a, b in zip(ends, ends[1:], strict=False)]


def _pythae_epochs(python: Path, data: dict[str, Path], epochs: int, tmp: Path) -> list[float]:
    cmd = [str(python), str(Path(__file__).with_name("pythae_driver.py")), str(data["train"]),
           str(data["eval"]), str(epochs), str(tmp / "pythae")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
    if done.returncode:
        raise RuntimeError("pythae failed: " + (done.stderr.strip().splitlines() or ["?"])[-1])
    return _epoch_seconds(json.loads(done.stdout.strip().splitlines()[-1])["epoch_ends"])


def _vaelab_epochs(epochs: int, precision: str, tmp: Path, rep: int) -> list[float]:
    out, config = tmp / f"vaelab-{precision}-{rep}", tmp / "vaelab.toml"
    config.write_text(VAELAB)
    cmd = [sys.executable, "-m", "vaelab", "train", str(config), "--out", str(out), "--no-progress",
           "--set", f"train.epochs={epochs}", "--set", f'train.precision="{precision}"']  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError("vaelab train failed: " + done.stderr.strip().splitlines()[-1])
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return _epoch_seconds([json.loads(line)["seconds"] for line in lines])


def peer_benchmark(train, test, epochs: int = 4, reps: int = 3) -> dict:
    """Median seconds per epoch of pythae and of vaelab (fp32, and ``auto`` precision where
    it resolves to something else on this machine), alternating ``reps`` times."""
    from vaelab.device import resolve_precision

    python = pythae_python()
    auto = resolve_precision("auto", torch.device("cpu"))
    sides = ["fp32"] + ([auto] if auto != "fp32" else [])
    times: dict[str, list[float]] = {"pythae": [], **{f"vaelab {p}": [] for p in sides}}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = {"train": tmp / "train.npy", "eval": tmp / "eval.npy"}
        np.save(data["train"], (train.images.float() / 255).numpy())  # (60000, 1, 28, 28)
        np.save(data["eval"], (test.images[:1000].float() / 255).numpy())
        for rep in range(reps):
            times["pythae"] += _pythae_epochs(python, data, epochs, tmp)
            for p in sides:
                times[f"vaelab {p}"] += _vaelab_epochs(epochs, p, tmp, rep)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"seconds": med, "ratio": {k: med["pythae"] / v for k, v in med.items()},
            "epochs": epochs, "reps": reps, "auto": auto}  # fmt: skip
