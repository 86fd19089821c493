"""Time one optimizer step of ``vaelab.thesis.optim.Adam`` against ``torch.optim.Adam(foreach=True)``.

The parameters have the shapes of the reference VAE MLP: encoder 784-400-(20, 20) (mean and
log-variance heads) and decoder 20-400-784, 652 824 parameters in 10 tensors. Both
optimizers get the same fixed gradients; steps are timed interleaved (A, B, A, B, …) so
drift in machine load hits both alike, and the medians are compared.
"""

from __future__ import annotations

import statistics
import time

import torch

from vaelab.thesis.optim import Adam

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
    """Median µs per step of both optimizers and their ratio (vaelab / torch).

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


def _measure(reps: int, warmup: int, seed: int) -> dict[str, float]:
    ours = Adam(_params(seed), lr=1e-3)
    theirs = torch.optim.Adam(_params(seed), lr=1e-3, foreach=True)
    for _ in range(warmup):
        ours.step()
        theirs.step()
    t_ours, t_theirs = [], []
    clock = time.perf_counter_ns
    for i in range(2 * reps):
        opt, out = (ours, t_ours) if i % 2 == 0 else (theirs, t_theirs)
        start = clock()
        opt.step()
        out.append(clock() - start)
    ours_us = statistics.median(t_ours) / 1e3
    torch_us = statistics.median(t_theirs) / 1e3
    return {
        "vaelab_adam_us": ours_us,
        "torch_adam_us": torch_us,
        "ratio": ours_us / torch_us,
        "n_params": float(sum(p.numel() for p in ours.param_groups[0]["params"])),
        "reps": float(reps),
        "threads": float(torch.get_num_threads()),
    }


if __name__ == "__main__":
    import sys

    r = run(threads=int(sys.argv[1]) if len(sys.argv) > 1 else None)
    print(
        f"vaelab.thesis.optim.Adam {r['vaelab_adam_us']:.1f} µs/step, "
        f"torch.optim.Adam(foreach=True) {r['torch_adam_us']:.1f} µs/step, "
        f"ratio {r['ratio']:.3f} ({int(r['n_params'])} params, {int(r['reps'])} reps, "
        f"{int(r['threads'])} threads)"
    )
