"""`make bench`: speed and memory of vaelab against the usual PyTorch loop, side by side.

Every comparison runs both sides in this one process, interleaved (A, B, A, B, …) and
reports medians, so noise from the shared machine hits both alike. Writes the section
between the perf markers of benchmarks/RESULTS.md (the rest of the file is kept).

    python benchmarks/run.py [--quick] [--device cpu|cuda] [--no-eval] [--no-peer]
    make bench ARGS=--quick
"""

from __future__ import annotations

import argparse
import itertools
import math
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

from vaelab.cli import keep_freed_memory  # noqa: E402
from vaelab.config import ModelConfig  # noqa: E402
from vaelab.data.batches import Batches  # noqa: E402
from vaelab.data.cache import fetch, load_dataset  # noqa: E402
from vaelab.eval.likelihood import log_likelihood  # noqa: E402
from vaelab.models.registry import build_model  # noqa: E402
from vaelab.train.optimizers import make_optimizer  # noqa: E402

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
    """torchvision's MNIST + transforms.ToTensor(), step for step: the images stay a uint8
    torch tensor, each item is indexed out, turned into a PIL image and back into a float
    tensor (view, permute, contiguous, /255), the label through int()."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.data, self.targets = images[:, 0].clone(), labels.clone()  # (N, 28, 28), (N,)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        from PIL import Image

        img, target = self.data[index], int(self.targets[index])
        img = Image.fromarray(img.numpy(), mode="L")
        t = torch.from_numpy(np.array(img, np.uint8, copy=True))  # ToTensor for a PIL image
        t = t.view(img.size[1], img.size[0], 1).permute((2, 0, 1)).contiguous()
        return t.to(dtype=torch.float32).div(255), target


def sync(device: str) -> None:
    """Wait for the device, so wall times include its queued work."""
    if device != "cpu":
        torch.cuda.synchronize()


def baseline_steps(train, batch: int, steps: int, device: str = "cpu"):
    """A closure running ``steps`` steps of the examples loop; returns seconds."""
    torch.manual_seed(0)
    model = ExamplesVAE().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(
        PILDataset(train.images, train.labels), batch_size=batch, shuffle=True
    )

    def run() -> float:
        t0, done, train_loss = time.perf_counter(), 0, 0.0
        while done < steps:
            for x, _ in loader:
                x = x.to(device)
                opt.zero_grad()
                recon, mu, logvar = model(x)
                loss = examples_loss(recon, x, mu, logvar)
                loss.backward()
                train_loss += loss.item()  # as the examples loop does, every step
                opt.step()
                done += 1
                if done == steps:
                    break
        sync(device)
        return time.perf_counter() - t0

    return run


def examples_config() -> ModelConfig:
    return ModelConfig(kind="vae", widths=[400], bottleneck=20, activation="relu",
                       likelihood="bernoulli", image_shape=[1, 28, 28])  # fmt: skip


def vaelab_steps(train, batch: int, steps: int, compile: bool = False, device="cpu",
                 precision: str = "fp32"):  # fmt: skip
    """The same model and hyper-parameters the vaelab way: resident batches, fused BCE
    from logits, vaelab's Adam (as ``train.optimizer = "adam"`` builds it: one fused kernel
    where torch has it); optionally under torch.compile and in bf16 autocast."""
    from vaelab.train.step import autocast

    torch.manual_seed(0)
    model = build_model(examples_config(), "mse").to(device)
    opt = make_optimizer("adam", model.parameters(), lr=1e-3)
    batches = Batches(train, batch, device=device)
    objective = model.objective
    if compile:
        objective = torch.compile(model.objective)

    mixed = autocast(torch.device(device), precision)  # built once, entered per step

    def step(x, y):
        with mixed:
            loss = objective(x).sum()  # the examples loop sums over the batch too
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return timed_steps(step, batches, steps, device)


def timed_steps(step, batches: Batches, steps: int, device: str = "cpu"):
    """A closure running ``step(x, y)`` on ``steps`` batches and returning the seconds; run
    once here as warm-up (and compilation)."""

    def run() -> float:
        t0, done = time.perf_counter(), 0
        while done < steps:
            for x, y in batches:
                step(x, y)
                done += 1
                if done == steps:
                    break
        sync(device)
        return time.perf_counter() - t0

    run()
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
    """Forward matmul FLOPs 2·Σ d_in·d_out, times 3 for forward + backward (the usual
    convention, and the issue's)."""
    return 3 * 2 * sum(a * b for a, b in LAYERS)


def done_flops_per_image() -> float:
    """The matmul FLOPs autograd actually runs: the convention less the first layer's input
    gradient, which nothing needs (the images do not require grad)."""
    a, b = LAYERS[0]
    return train_flops_per_image() - 2 * a * b


def matmul_gflops(
    batch: int, reps: int = 30, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> float:
    """GFLOP/s of exactly the training matmuls (forward, grad-input, grad-weight of each
    layer) at batch ``batch``: the ceiling for this model on this machine (in ``dtype``)."""
    mats = [(torch.randn(batch, a, device=device, dtype=dtype), torch.randn(a, b, device=device, dtype=dtype),
             torch.randn(batch, b, device=device, dtype=dtype)) for a, b in LAYERS]  # fmt: skip

    def chain():
        for x, w, g in mats:
            x @ w  # forward (B, a) @ (a, b)
            g @ w.T  # grad input (B, b) @ (b, a)
            x.T @ g  # grad weight (a, B) @ (B, b)

    for _ in range(5):
        chain()
    samples = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        chain()
        sync(device)
        samples.append(time.perf_counter() - t0)
    return train_flops_per_image() * batch / min(samples) / 1e9


# --------------------------------------------------------------------------------------
# 3b. Many small models at once: the thesis's pair (Adam, AMSGrad) fused vs one by one
# --------------------------------------------------------------------------------------


def fused_benchmark(train, steps: int, reps: int, device: str = "cpu") -> dict:
    """Steps/s of the thesis's two n_b = 2 autoencoders (Adam and AMSGrad, batch 512)
    trained in one fused step against the same two models stepped one after the other."""
    from vaelab.reproduce import thesis_config
    from vaelab.train.setup import setup_model
    from vaelab.train.step import step_function

    cfgs = [thesis_config(opt, 2, 1) for opt in ("adam", "amsgrad")]
    for c in cfgs:
        c.model.image_shape = list(train.image_shape)
    batches = Batches(train, cfgs[0].train.batch_size, device=device)
    fused_pair = [setup_model(c, torch.device(device)) for c in cfgs]
    alone_pair = [setup_model(c, torch.device(device)) for c in cfgs]
    fused = step_function([m for m, _ in fused_pair], [o for _, o in fused_pair])
    alone = [step_function([m], [o]) for m, o in alone_pair]

    def one_by_one(x, y):
        for step in alone:
            step(x, y)

    med = interleaved({"fused": timed_steps(fused, batches, steps, device),
                       "one by one": timed_steps(one_by_one, batches, steps, device)}, reps)  # fmt: skip
    per_step = med["fused"] / steps  # one fused step = one step of both models
    full = 10_000 * len(batches) * 2 * per_step  # the thesis: 10,000 epochs, two fused pairs
    layers = [784, 512, 256, 128, 2, 128, 256, 512, 784]
    flops = 3 * 2 * sum(a * b for a, b in itertools.pairwise(layers)) * 60_000 * 10_000 * 4
    return {"batch": batches.batch_size, "steps": steps, "fused_s": med["fused"], "pflop": flops / 1e15,
            "alone_s": med["one by one"], "ratio": med["one by one"] / med["fused"],
            "per_step_ms": per_step * 1e3, "full_hours": full / 3600}  # fmt: skip


# --------------------------------------------------------------------------------------
# 3c. Mixed precision: the Burda et al. VAE / IWAE step in fp32 and bf16
# --------------------------------------------------------------------------------------

IWAE_CONFIG = Path(__file__).parents[1] / "configs" / "mnist_vae_iwae_arch.toml"


def precision_benchmark(
    train, reps: int, quick: bool, device: str = "cpu", compile: bool = True
) -> list[dict]:
    """ms per training step of configs/mnist_vae_iwae_arch.toml (batch 100) for k = 1, 5, 50
    in fp32 and bf16 (train.precision), eager and (unless ``compile`` is off) compiled,
    interleaved per k."""
    from vaelab.config import load_config
    from vaelab.train.setup import setup_model
    from vaelab.train.step import step_function

    out = []
    for k, steps in ((1, 150), (5, 60), (50, 10)):
        steps = max(5, steps // 3) if quick else steps
        cfg = load_config(IWAE_CONFIG, [f"model.k={k}"])
        cfg.model.image_shape = list(train.image_shape)
        batches = Batches(train, cfg.train.batch_size, binarize="dynamic", device=device)
        fns = {}
        torch._dynamo.reset()  # dynamo stops compiling a function after 8 recompiles
        for precision, compiled in itertools.product(
            ("fp32", "bf16"), (False, True)[: 1 + compile]
        ):
            model, opt = setup_model(cfg, torch.device(device))
            step = step_function([model], [opt], compiled, print, precision)
            fns[(precision, compiled)] = timed_steps(step, batches, steps, device)
        med = interleaved(fns, reps)
        ms = {key: sec / steps * 1e3 for key, sec in med.items()}
        best = {p: min(v for (q, _), v in ms.items() if q == p) for p in ("fp32", "bf16")}
        hours = 3280 * len(batches) * min(ms.values()) / 1e3 / 3600
        out.append({"k": k, "ms": ms, "speedup": best["fp32"] / best["bf16"], "hours_3280": hours})
    return out


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
    # the bound: the same decoder matmuls at the evaluation's chunk of 1024 rows, outputs
    # preallocated, best of 20: the machine's matmul rate at exactly these shapes
    rows = 1024
    mats = [(torch.randn(rows, a), torch.randn(a, b), torch.empty(rows, b)) for a, b in dec]
    best = math.inf
    for _ in range(20):
        t1 = time.perf_counter()
        for m, w, o in mats:
            torch.mm(m, w, out=o)
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


def peer_section(train, test, quick: bool) -> list[str]:
    """The rows of vaelab against pythae 0.1.2 per epoch (benchmarks/peer.py)."""
    import peer

    head = [
        "### Against pythae 0.1.2, per epoch",
        "",
        peer.__doc__.split("\n\n")[1].replace("\n", " "),
        "",
    ]
    try:
        pe = peer.peer_benchmark(train, test, epochs=3 if quick else 4, reps=2 if quick else 3)
    except (RuntimeError, OSError) as e:
        return [*head, f"Not measured: {e}", ""]
    rows = [
        f"| {name} | {sec:.2f} s | {pe['ratio'][name]:.2f}x |"
        for name, sec in pe["seconds"].items()
    ]
    return [*head, f"{pe['reps']} alternating runs of {pe['epochs']} epochs each, medians of the "
            f"epochs after the first; `auto` precision resolves to {pe['auto']} on this CPU.", "",
            "| library | seconds per epoch | speed vs pythae |", "|---|---|---|", *rows, ""]  # fmt: skip


# --------------------------------------------------------------------------------------


def machine() -> str:
    from vaelab.device import machine

    return f"{machine()} ({platform.machine()})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repetitions")
    parser.add_argument("--no-eval", action="store_true", help="skip the k = 5000 evaluation")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--no-peer", action="store_true",
                        help="skip the pythae 0.1.2 row (it makes its own virtual environment)")  # fmt: skip
    parser.add_argument("--device", default="cpu",
                        help="device of the training, matmul and fused rows (cpu; cuda is untested)")  # fmt: skip
    args = parser.parse_args()
    keep_freed_memory()  # as the vaelab command does, for both sides of every comparison
    steps, reps = (40, 3) if args.quick else (150, 5)
    fetch("mnist")
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    lines = [START, "", "## Speed and memory (`make bench`)", "", f"Machine: {machine()}; "
             f"{time.strftime('%Y-%m-%d')}. Command: `python benchmarks/run.py"
             f"{' --quick' if args.quick else ''}"
             f"{'' if args.device == 'cpu' else ' --device ' + args.device}`.", ""]  # fmt: skip

    # 1 + 2: training throughput against the examples loop and the matmul ceiling
    rows = []
    for batch in (128, 512):
        dev = args.device
        fns = {"pytorch/examples loop": baseline_steps(train, batch, steps, dev),
               "vaelab (eager)": vaelab_steps(train, batch, steps, device=dev)}  # fmt: skip
        if not args.no_compile:
            try:
                fns["vaelab (torch.compile)"] = vaelab_steps(train, batch, steps, True, dev)
            except Exception as e:  # compilation unavailable: report and go on
                print(f"torch.compile unavailable: {type(e).__name__}: {e}".splitlines()[0])
        fns["vaelab bf16 (eager)"] = vaelab_steps(train, batch, steps, False, dev, "bf16")
        med = interleaved(fns, reps)
        peak = matmul_gflops(batch, device=dev)
        base = batch * steps / med["pytorch/examples loop"]
        for name, sec in med.items():
            ips = batch * steps / sec
            frac = f"{ips * train_flops_per_image() / 1e9 / peak:.0%}"
            done = f"{ips * done_flops_per_image() / 1e9 / peak:.0%}"
            if "bf16" in name:  # the ceiling is fp32's; bf16 matmuls have their own
                frac = done = ""
            rows.append(f"| {batch} | {name} | {ips:,.0f} | {ips / base:.2f}x | {frac} | {done} |")
        bound = peak * 1e9 / done_flops_per_image()  # images/s of a loop that only multiplies
        rows.append(f"| {batch} | matmul ceiling ({peak:.1f} GFLOP/s) | {bound:,.0f} | "
                    f"{bound / base:.2f}x | | 100% |")  # fmt: skip
    lines += ["### Training the pytorch/examples VAE (784-400-20, BCE summed, Adam 1e-3)", "",
              f"Same model, batch size and number of steps ({steps}); medians of {reps} interleaved "
              "repetitions. Of matmul ceiling = training FLOPs/s by the usual convention (3 x "
              f"forward matmuls, {train_flops_per_image() / 1e6:.2f} MFLOP per image) over the "
              "measured throughput of exactly those matmuls; the last column counts only the "
              f"matmuls autograd runs ({done_flops_per_image() / 1e6:.2f} MFLOP: the first "
              "layer's input gradient is never computed). The ceiling row (those matmuls alone, "
              "nothing else) is the most any loop of this model could gain over the examples "
              "loop on this machine in fp32; the bf16 row (`train.precision = \"bf16\"`) "
              "multiplies in bfloat16, so the fp32 ceiling does not bound it.", "",
              "| batch | loop | images/s | vs examples | of matmul ceiling | of ceiling, matmuls run |",
              "|---|---|---|---|---|---|",
              *rows, ""]  # fmt: skip

    # 2b: the peer library, per epoch
    if not args.no_peer:
        lines += peer_section(train, test, args.quick)

    # 3: optimizer step
    import bench_optim

    opt = bench_optim.run()
    ref = opt["us"]["vaelab adam (reference, foreach)"]
    lines += ["### Optimizer step (reference VAE parameters)", "",
              f"One Adam step over the {opt['n_params']:,} parameters of the examples VAE, random "
              f"gradients, median of {opt['reps']} interleaved steps.", "",
              "| optimizer | µs per step | vs the thesis's reference |", "|---|---|---|",
              *[f"| {name} | {us:.0f} | {ref / us:.2f}x |" for name, us in opt["us"].items()], ""]  # fmt: skip

    # 3b: many models at once
    fz = fused_benchmark(train, steps // 2, reps, args.device)
    lines += ["### Many small models at once (thesis §2.3 pair: Adam + AMSGrad, n_b = 2)", "",
              f"Two 784-512-256-128-2 autoencoders, batch {fz['batch']}, {fz['steps']} steps each; "
              "fused = stacked parameters, one vmapped step (`vaelab.train.fused.Fused`, what "
              "`vaelab reproduce thesis` uses with `--device cuda` or `--fuse on`); one by one = the same two "
              "steps in turn.", "",
              "| fused | one by one | speed-up | per fused step | projected thesis (10,000 epochs x 4 models) |",
              "|---|---|---|---|---|",
              f"| {fz['fused_s']:.2f} s | {fz['alone_s']:.2f} s | {fz['ratio']:.2f}x | "
              f"{fz['per_step_ms']:.1f} ms | {fz['full_hours']:.1f} h |", "",
              f"The thesis's full reproduction is {fz['pflop']:.1f} PFLOP of matmuls (3 x forward, "
              "10,000 epochs of 60,000 images, 4 models). "
              + ("On an H100 (about 67 TFLOP/s fp32 without tensor cores, about 495 TFLOP/s "
                 f"dense TF32) that is at least {fz['pflop'] * 1e3 / 67:.0f} s in fp32 and "
                 f"{fz['pflop'] * 1e3 / 495:.0f} s in TF32 — a floor from FLOPs, not a "
                 "measurement: the 5-minute target needs near-peak fp32 or TF32 matmuls."
                 if args.device == "cpu" else ""), ""]  # fmt: skip

    # 3c: mixed precision
    pr = precision_benchmark(train, reps, args.quick, args.device, not args.no_compile)
    rates = {str(dt).split(".")[1]: matmul_gflops(512, device=args.device, dtype=dt)
             for dt in (torch.float32, torch.bfloat16)}  # fmt: skip
    lines += ["### Mixed precision (`train.precision`): the Burda et al. VAE / IWAE step", "",
              "ms per training step of `configs/mnist_vae_iwae_arch.toml` (batch 100, Adam) with "
              "`--set model.k=K`; bf16 = the forward pass under torch.autocast(bfloat16), weights, "
              "optimizer and losses in fp32; compiled = `--compile`. Speed-up = best fp32 over best "
              "bf16; the last column projects 3,280 epochs (the published protocol) at the fastest "
              "setting, training steps only.", "",
              "| k | fp32 | fp32 compiled | bf16 | bf16 compiled | speed-up | 3,280 epochs |",
              "|---|---|---|---|---|---|---|",
              *[f"| {r['k']} | " + " | ".join(f"{r['ms'][key]:.2f} ms" if key in r["ms"] else ""
                for key in (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)))
                + f" | {r['speedup']:.2f}x | {r['hours_3280']:.1f} h |" for r in pr], "",
              "The matmuls alone (the examples VAE's training matmuls at batch 512, as in the "
              f"ceiling rows): {rates['float32']:.0f} GFLOP/s in fp32, {rates['bfloat16']:.0f} "
              "GFLOP/s in bf16. The step gains less than the matmuls: the elementwise work "
              "(likelihood, activations, Adam) stays.", ""]  # fmt: skip

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
