"""Time one Adam step: vaelab's (fused kernel and thesis reference) against torch's.

The parameters have the shapes of the reference VAE MLP: encoder 784-400-(20, 20) (mean and
log-variance heads) and decoder 20-400-784, 652 824 parameters in 10 tensors. All
optimizers get the same fixed gradients; steps are timed interleaved (A, B, A, B, …) so
drift in machine load hits both alike, and the medians are compared.
"""

from __future__ import annotations

import statistics
import time

import torch

from vaelab.thesis.optim import Adam
from vaelab.train.optimizers import make_optimizer

# (out, in) weights and biases of the reference VAE MLP.
REFERENCE_SHAPES: list[tuple[int, ...]] = [
    (400, 784), (400,),  # encoder hidden 784 -> 400
    (20, 400), (20,),  # mean head 400 -> 20
    (20, 400), (20,),  # log-variance head 400 -> 20
    (400, 20), (400,),  # decoder hidden 20 -> 400
    (784, 400), (784,),  # decoder output 400 -> 784
]  # fmt: skip


def _params(seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape in REFERENCE_SHAPES:
        p = torch.randn(shape, generator=gen).requires_grad_()
        p.grad = torch.randn(shape, generator=gen)
        params.append(p)
    return params


def run(
    reps: int = 400, warmup: int = 20, seed: int = 0, threads: int | None = None
) -> dict[str, float]:
    """Median µs per step of each of :data:`OPTIMIZERS`.

    ``threads`` sets ``torch.set_num_threads`` for the measurement (default: leave as is);
    one thread gives steadier numbers on a busy machine.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _measure(reps, warmup, seed)
    finally:
        torch.set_num_threads(previous)


OPTIMIZERS = {
    "vaelab adam (kernel)": lambda p: make_optimizer("adam", p, lr=1e-3),
    "vaelab adam (reference, foreach)": lambda p: Adam(p, lr=1e-3),
    "torch Adam(foreach=True)": lambda p: torch.optim.Adam(p, lr=1e-3, foreach=True),
    "torch Adam(fused=True)": lambda p: torch.optim.Adam(p, lr=1e-3, fused=True),
}
"""What is timed: ``train.optimizer = "adam"`` as training builds it (torch's fused kernel
where it runs), the thesis's readable reference, and torch's two fast Adams."""


def _measure(reps: int, warmup: int, seed: int) -> dict[str, float]:
    opts = {}
    for name, make in OPTIMIZERS.items():
        try:
            opts[name] = make(_params(seed))
        except (RuntimeError, ValueError):  # e.g. no fused kernel on this device in this torch
            continue
    for _ in range(warmup):
        for opt in opts.values():
            opt.step()
    times: dict[str, list[int]] = {name: [] for name in opts}
    clock = time.perf_counter_ns
    for _ in range(reps):
        for name, opt in opts.items():  # interleaved
            start = clock()
            opt.step()
            times[name].append(clock() - start)
    us = {name: statistics.median(t) / 1e3 for name, t in times.items()}
    n = sum(p.numel() for p in next(iter(opts.values())).param_groups[0]["params"])
    return {"us": us, "n_params": n, "reps": reps, "threads": torch.get_num_threads()}


if __name__ == "__main__":
    import sys

    r = run(threads=int(sys.argv[1]) if len(sys.argv) > 1 else None)
    for name, t in r["us"].items():
        print(f"{name:34s} {t:8.1f} µs/step")
    print(f"({r['n_params']} params, {r['reps']} reps, {r['threads']} threads)")
