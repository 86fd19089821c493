"""`make bench`: speed and memory of vaelab against the usual PyTorch loop, side by side.

Every comparison runs both sides in this one process, interleaved (A, B, A, B, …) and
reports medians, so noise from the shared machine hits both alike. Writes the section
between the perf markers of benchmarks/RESULTS.md (the rest of the file is kept).

    python benchmarks/run.py [--quick] [--device cpu|cuda] [--no-eval]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from vaelab.config import ModelConfig  # noqa: E402
from vaelab.data import Batches, fetch, load_dataset  # noqa: E402
from vaelab.evaluate import log_likelihood  # noqa: E402
from vaelab.models import build_model  # noqa: E402
from vaelab.optim import Adam  # noqa: E402

RESULTS = Path(__file__).parent / "RESULTS.md"
START, END = "<!-- perf:start -->", "<!-- perf:end -->"


# --------------------------------------------------------------------------------------
# 1. The pytorch/examples VAE loop, re-created faithfully
# --------------------------------------------------------------------------------------


class ExamplesVAE(nn.Module):
    """The model of pytorch/examples vae/main.py: 784-400-(20, 20), 20-400-784, ReLU."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x):
        h1 = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h1), self.fc22(h1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def examples_loss(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


class PILDataset(torch.utils.data.Dataset):
    """One image at a time through PIL and a ToTensor-like conversion, as torchvision's
    MNIST + transforms.ToTensor() do."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images[:, 0].numpy(), labels.numpy()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        img = Image.fromarray(self.images[i], mode="L")
        t = torch.from_numpy(np.array(img, np.uint8, copy=True)).view(1, 28, 28)
        return t.to(torch.float32).div(255), int(self.labels[i])


def baseline_steps(train, batch: int, steps: int):
    """A closure running ``steps`` steps of the examples loop; returns seconds."""
    torch.manual_seed(0)
    model = ExamplesVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(
        PILDataset(train.images, train.labels), batch_size=batch, shuffle=True
    )

    def run() -> float:
        t0, done = time.perf_counter(), 0
        while done < steps:
            for x, _ in loader:
                opt.zero_grad()
                recon, mu, logvar = model(x)
                loss = examples_loss(recon, x, mu, logvar)
                loss.backward()
                opt.step()
                done += 1
                if done == steps:
                    break
        return time.perf_counter() - t0

    return run


def examples_config() -> ModelConfig:
    return ModelConfig(kind="vae", widths=[400], bottleneck=20, activation="relu",
                       likelihood="bernoulli", image_shape=[1, 28, 28])  # fmt: skip


def vaelab_steps(train, batch: int, steps: int, compile: bool = False, device="cpu"):
    """The same model and hyper-parameters the vaelab way: resident batches, fused BCE
    from logits, vaelab's Adam; optionally under torch.compile."""
    torch.manual_seed(0)
    model = build_model(examples_config(), "mse").to(device)
    opt = Adam(model.parameters(), lr=1e-3)
    batches = Batches(train, batch, device=device)
    objective = model.objective
    if compile:
        objective = torch.compile(model.objective)

    def step(x):
        loss = objective(x).sum()  # the examples loop sums over the batch too
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def run() -> float:
        t0, done = time.perf_counter(), 0
        while done < steps:
            for x, _ in batches:
                step(x)
                done += 1
                if done == steps:
                    break
        if device != "cpu":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    run()  # warm-up (and compilation)
    return run


def interleaved(fns: dict, reps: int) -> dict[str, float]:
    """Median seconds of each closure, run in turn ``reps`` times."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(fn())
    return {k: statistics.median(v) for k, v in times.items()}


# --------------------------------------------------------------------------------------
# 2. The machine's matmul limit at the model's shapes
# --------------------------------------------------------------------------------------

LAYERS = [(784, 400), (400, 40), (20, 400), (400, 784)]  # the examples VAE as vaelab builds it


def train_flops_per_image() -> float:
    """Forward matmul FLOPs 2·Σ d_in·d_out, times 3 for forward + backward."""
    return 3 * 2 * sum(a * b for a, b in LAYERS)


def matmul_gflops(batch: int, reps: int = 30) -> float:
    """GFLOP/s of exactly the training matmuls (forward, grad-input, grad-weight of each
    layer) at batch ``batch``: the ceiling for this model on this machine."""
    mats = [(torch.randn(batch, a), torch.randn(a, b), torch.randn(batch, b)) for a, b in LAYERS]

    def chain():
        for x, w, g in mats:
            x @ w  # forward (B, a) @ (a, b)
            g @ w.T  # grad input (B, b) @ (b, a)
            x.T @ g  # grad weight (a, B) @ (B, b)

    for _ in range(5):
        chain()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        chain()
        samples.append(time.perf_counter() - t0)
    return train_flops_per_image() * batch / min(samples) / 1e9


# --------------------------------------------------------------------------------------
# 4. Likelihood evaluation against the decoder's FLOP bound
# --------------------------------------------------------------------------------------


def eval_benchmark(test, images: int, k: int) -> dict:
    """k-sample importance-weighted NLL on ``images`` test images with the Burda et al.
    architecture (untrained weights: the cost does not depend on them)."""
    cfg = ModelConfig(kind="vae", widths=[200, 200], bottleneck=50, activation="tanh",
                      image_shape=[1, 28, 28])  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg, "mse").eval()
    x = Batches(test.limit(images), 100, shuffle=False, binarize="static").images
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(x), 100):
            log_likelihood(model, x[i : i + 100], k)
    seconds = time.perf_counter() - t0
    dec = [(50, 200), (200, 200), (200, 784)]
    flops = 2 * sum(a * b for a, b in dec) * k * len(x)
    # the bound: the same decoder matmuls at the evaluation's row count, timed alone
    rows = 32768
    mats = [(torch.randn(rows, a), torch.randn(a, b)) for a, b in dec]
    best = math.inf
    for _ in range(5):
        t1 = time.perf_counter()
        for m, w in mats:
            m @ w
        best = min(best, time.perf_counter() - t1)
    gflops = 2 * sum(a * b for a, b in dec) * rows / best / 1e9
    bound = flops / (gflops * 1e9)
    return {"images": len(x), "k": k, "seconds": seconds, "bound_seconds": bound,
            "ratio": seconds / bound, "decoder_gflops": gflops}  # fmt: skip


# --------------------------------------------------------------------------------------
# 5. Peak memory of `vaelab train` on MNIST
# --------------------------------------------------------------------------------------


def peak_memory_mib(epochs: int = 1) -> float:
    """Peak resident memory of a `vaelab train` process (one MNIST epoch), read by a fresh
    wrapper process whose only child is the training, so that nothing else this benchmark
    started (e.g. torch.compile's worker processes) is counted."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "vaelab", "train", str(Path(__file__).parents[1] / "configs" / "mnist_ae.toml"),
               "--set", f"train.epochs={epochs}", "--out", f"{tmp}/run", "--no-progress"]  # fmt: skip
        wrapper = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
                   "capture_output=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")  # fmt: skip
        out = subprocess.run(
            [sys.executable, "-c", wrapper, *cmd], check=True, capture_output=True, text=True
        )
    return int(out.stdout.split()[-1]) / 1024  # KiB -> MiB (Linux)


# --------------------------------------------------------------------------------------


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repetitions")
    parser.add_argument("--no-eval", action="store_true", help="skip the k = 5000 evaluation")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    args = parser.parse_args()
    steps, reps = (40, 3) if args.quick else (150, 5)
    fetch("mnist")
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    lines = [START, "", "## Speed and memory (`make bench`)", "", f"Machine: {machine()}; "
             f"{time.strftime('%Y-%m-%d')}. Command: `python benchmarks/run.py"
             f"{' --quick' if args.quick else ''}`.", ""]  # fmt: skip

    # 1 + 2: training throughput against the examples loop and the matmul ceiling
    rows = []
    for batch in (128, 512):
        fns = {"pytorch/examples loop": baseline_steps(train, batch, steps),
               "vaelab (eager)": vaelab_steps(train, batch, steps)}  # fmt: skip
        if not args.no_compile:
            try:
                fns["vaelab (torch.compile)"] = vaelab_steps(train, batch, steps, compile=True)
            except Exception as e:  # compilation unavailable: report and go on
                print(f"torch.compile unavailable: {type(e).__name__}: {e}".splitlines()[0])
        med = interleaved(fns, reps)
        peak = matmul_gflops(batch)
        base = batch * steps / med["pytorch/examples loop"]
        for name, sec in med.items():
            ips = batch * steps / sec
            frac = ips * train_flops_per_image() / 1e9 / peak
            rows.append(f"| {batch} | {name} | {ips:,.0f} | {ips / base:.2f}x | {frac:.0%} |")
        rows.append(f"| {batch} | matmul ceiling ({peak:.1f} GFLOP/s) | "
                    f"{peak * 1e9 / train_flops_per_image():,.0f} | | 100% |")  # fmt: skip
    lines += ["### Training the pytorch/examples VAE (784-400-20, BCE summed, Adam 1e-3)", "",
              f"Same model, batch size and number of steps ({steps}); medians of {reps} interleaved "
              "repetitions. Fraction = training FLOPs/s (3 x forward matmuls, "
              f"{train_flops_per_image() / 1e6:.2f} MFLOP per image) over the measured matmul "
              "throughput of exactly those matmuls.", "",
              "| batch | loop | images/s | vs examples | of matmul ceiling |", "|---|---|---|---|---|",
              *rows, ""]  # fmt: skip

    # 3: optimizer step
    import bench_optim

    opt = bench_optim.run()
    lines += ["### Optimizer step (reference VAE parameters)", "",
              "| vaelab Adam | torch.optim.Adam(foreach=True) | ratio |", "|---|---|---|",
              f"| {opt['vaelab_adam_us']:.0f} µs | {opt['torch_adam_us']:.0f} µs | {opt['ratio']:.3f} |", ""]  # fmt: skip

    # 4: evaluation
    if not args.no_eval:
        ev = eval_benchmark(test, 1000 if args.quick else 10000, 5000)
        lines += ["### Importance-sampled NLL (k = 5000, Burda et al. architecture)", "",
                  "| test images | wall time | decoder FLOP bound | ratio |", "|---|---|---|---|",
                  f"| {ev['images']:,} | {ev['seconds']:.1f} s | {ev['bound_seconds']:.1f} s "
                  f"({ev['decoder_gflops']:.0f} GFLOP/s) | {ev['ratio']:.2f}x |", ""]  # fmt: skip

    # 5: memory
    mem = peak_memory_mib()
    lines += ["### Memory", "", f"Peak resident memory of `vaelab train configs/mnist_ae.toml` "
              f"(one epoch, full MNIST): {mem:,.0f} MiB.", "", END]  # fmt: skip

    text = RESULTS.read_text() if RESULTS.exists() else "# vaelab benchmark results\n\n"
    if START in text and END in text:
        text = text[: text.index(START)] + "\n".join(lines) + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + "\n".join(lines) + "\n"
    RESULTS.write_text(text)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
