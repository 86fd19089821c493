"""Reddi, Kale & Kumar's counter-example to Adam (their §5; thesis §1.2, Algorithms 1 and 3).

An online problem on Θ = [−1, 1] with linear losses f_t(x) = g_t·x:

- deterministic: g_t = 1010 when t mod 101 = 1, otherwise −10;
- stochastic: g_t = 1010 with probability 0.01, otherwise −10 (seeded).

Every 101 steps the gradients sum to +10, so x = −1 is optimal (for the stochastic variant,
E g_t = 0.2 > 0). Adam's exponential average forgets the rare large gradient, the frequent
small ones win, and Adam drifts to the worst point x = +1; AMSGrad keeps v̂_t = max(v̂_{t−1},
v_t), so the large gradient keeps its weight and AMSGrad converges to x = −1 with average
regret R_t/t → 0 (Theorem 1.2.17).

Both optimizers use the paper's β1 = 0.9, β2 = 0.99 and α_t = α/√t, no bias correction
(Reddi's formulation; Adam without lines 8–9 of Algorithm 1, as in Example 1.2.15) and the
projection onto Θ via ``bounds=(-1, 1)``. α = 1 and the start x_1 = 0 are our choices.

The stochastic variant is much slower: its mean gradient 0.2 hides under a per-step noise of
standard deviation ≈ 101, so single runs wander for hundreds of thousands of steps. The demo
therefore runs several seeded copies side by side (one coordinate each) and shows their mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from vaelab.errors import is_count
from vaelab.thesis.optim import Adam, AMSGrad, regret

__all__ = [
    "BIG_GRADIENT",
    "SMALL_GRADIENT",
    "PERIOD",
    "DEFAULT_STEPS",
    "DEFAULT_ALPHA",
    "STOCHASTIC_RUNS",
    "REDDI_OPTIMIZERS",
    "reddi_gradients",
    "OnlineRun",
    "run_online",
    "run_demo",
]

BIG_GRADIENT = 1010.0
SMALL_GRADIENT = -10.0
PERIOD = 101
BIG_PROBABILITY = 0.01
BETAS = (0.9, 0.99)
DEFAULT_ALPHA = 1.0
DEFAULT_STEPS = 200_000
"""Enough for Adam to sit at +1 and AMSGrad at −1 on the deterministic variant (~20 s in all);
the stochastic variant drifts far more slowly (see :func:`run_demo`)."""
STOCHASTIC_RUNS = 32
"""Seeded copies of the stochastic variant run side by side (one coordinate each)."""

REDDI_OPTIMIZERS: dict[str, type[Adam] | type[AMSGrad]] = {"adam": Adam, "amsgrad": AMSGrad}


def reddi_gradients(steps: int, stochastic: bool = False, seed: int = 0, runs: int = 1) -> Tensor:
    """Gradients g_t of the online losses f_t(x) = g_t·x (Def 1.2.14), float32, (T, runs).

    Deterministic copies are identical; stochastic ones draw their own coin flips (seeded).
    """
    for name, value in (("steps", steps), ("runs", runs)):
        if not is_count(value):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if stochastic:
        gen = torch.Generator().manual_seed(seed)
        big = torch.rand(steps, runs, generator=gen, dtype=torch.float64) < BIG_PROBABILITY
    else:
        big = (torch.arange(1, steps + 1) % PERIOD == 1)[:, None].expand(steps, runs)
    return torch.where(big, BIG_GRADIENT, SMALL_GRADIENT).to(torch.float32)  # (T, runs)


@dataclass(frozen=True)
class OnlineRun:
    """Iterates and regret R_t (Def 1.2.14) of one optimizer on one variant, for ``runs``
    independent copies side by side."""

    name: str
    stochastic: bool
    x: Tensor  # (T, runs) x_t, the point at which f_t is evaluated, t = 1…T
    regret: Tensor  # (T, runs) R_t (Def 1.2.14), float64
    x_final: Tensor  # (runs,) x_{T+1}, after the last step

    @property
    def average_regret(self) -> Tensor:
        """R_t / t, shape (T, runs)."""
        t = torch.arange(1, self.regret.shape[0] + 1, dtype=torch.float64)
        return self.regret / t[:, None]


def run_online(
    name: str,
    steps: int = DEFAULT_STEPS,
    *,
    stochastic: bool = False,
    seed: int = 0,
    alpha: float = DEFAULT_ALPHA,
    runs: int = 1,
) -> OnlineRun:
    """Run ``"adam"`` or ``"amsgrad"`` (Algorithms 1 and 3) on the Reddi problem.

    One parameter tensor of shape (runs,) — the optimizers act coordinate-wise, so each
    coordinate is an independent copy of the problem, projected onto Θ = [−1, 1]. The
    gradients are set directly (f_t is linear), without autograd.

    R_t follows Def 1.2.14 with the best fixed point min_x Σ_{s≤t} g_s x = −|Σ_{s≤t} g_s|
    for the deterministic variant. For the stochastic one f_t is replaced by its mean
    F(x) = E[g]·x = 0.2x, the objective the iterates should minimise, so R_t = Σ_{s≤t}
    0.2 (x_s + 1) carries no sampling noise in the comparator.
    """
    cls = REDDI_OPTIMIZERS.get(name)
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(REDDI_OPTIMIZERS)}")
    grads = reddi_gradients(steps, stochastic, seed, runs)  # (T, runs)
    x = torch.zeros(runs, requires_grad=True)
    opt = cls(
        [x],
        lr=alpha,
        betas=BETAS,
        bias_correction=False,
        bounds=(-1.0, 1.0),
        lr_schedule="inv_sqrt",
    )
    xs = torch.empty(steps, runs)  # (T, runs)
    with torch.no_grad():
        for t in range(steps):
            xs[t] = x  # x_t
            x.grad = grads[t]
            opt.step()  # x_{t+1} = Π_Θ(x_t − α_t m_t / √v_t)
    x64, g64 = xs.to(torch.float64), grads.to(torch.float64)
    if stochastic:
        mean_g = BIG_PROBABILITY * BIG_GRADIENT + (1 - BIG_PROBABILITY) * SMALL_GRADIENT  # 0.2
        t = torch.arange(1, steps + 1, dtype=torch.float64)
        r = torch.stack([regret(mean_g * x64[:, k], -mean_g * t) for k in range(runs)], dim=1)
    else:
        r = torch.stack(
            [regret(g64[:, k] * x64[:, k], -g64[:, k].cumsum(0).abs()) for k in range(runs)],
            dim=1,
        )
    return OnlineRun(name, stochastic, xs, r, x.detach().clone())


def _plot(runs: list[OnlineRun], path: Path, alpha: float) -> None:
    """x_t and R_t/t against t, Adam vs AMSGrad, one row per variant."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    variants = sorted({r.stochastic for r in runs})
    fig = Figure(figsize=(11, 3.6 * len(variants)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(variants), 2, squeeze=False)
    colors = {"adam": "tab:red", "amsgrad": "tab:blue"}
    labels = {"adam": "Adam", "amsgrad": "AMSGrad"}
    for row, stochastic in enumerate(variants):
        ax_x, ax_r = axes[row]
        top = 0.0
        for run in (r for r in runs if r.stochastic == stochastic):
            steps, copies = run.x.shape
            # buckets of whole periods, so R_t/t is always sampled at the same phase
            size = PERIOD * max(1, steps // (2000 * PERIOD)) if steps >= PERIOD else 1
            n_buckets = steps // size
            xb = run.x[: size * n_buckets].reshape(n_buckets, size, copies)  # (buckets, size, K)
            t = torch.arange(n_buckets, dtype=torch.float64) * size + size / 2
            if copies == 1:  # band: min–max of x_t within each bucket
                low, high = xb.amin(dim=(1, 2)), xb.amax(dim=(1, 2))
            else:  # band: 10–90 % quantiles over the copies of their bucket means
                low, high = xb.mean(1).quantile(torch.tensor([0.1, 0.9]), dim=1)
            c, lab = colors[run.name], labels[run.name]
            x_end = float(run.x_final.mean())
            ax_x.fill_between(t, low, high, color=c, alpha=0.25, lw=0)
            ax_x.plot(t, xb.mean(dim=(1, 2)), color=c, lw=1.2, label=f"{lab} (x_T = {x_end:+.3f})")
            avg = run.average_regret.mean(1)[size - 1 :: size][:n_buckets]  # R_t/t, bucket ends
            t_end = torch.arange(1, n_buckets + 1, dtype=torch.float64) * size
            final = float(run.average_regret[-1].mean())
            ax_r.plot(t_end, avg, color=c, lw=1.2, label=f"{lab} (R_T/T = {final:.3f})")
            top = max(top, float(avg[n_buckets // 50 :].max()))
        ax_x.axhline(-1.0, color="k", lw=0.6, ls=":")
        if stochastic:
            copies = runs[-1].x.shape[1]
            x_title = f"stochastic: mean x_t of {copies} seeded runs (band: 10–90 %)"
            r_title = "stochastic: mean R_t/t (regret of E f_t)"
        else:
            x_title = "deterministic: x_t (band: min–max per bucket)"
            r_title = "deterministic: average regret R_t/t"
        ax_x.set(title=x_title, xlabel="t", ylabel="x_t", ylim=(-1.08, 1.08))
        ax_r.set(title=r_title, xlabel="t", ylabel="R_t / t", ylim=(0.0, 1.1 * top))
        for ax in (ax_x, ax_r):
            ax.legend(loc="best", fontsize=9)
            ax.grid(alpha=0.3)
            ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
    fig.suptitle(
        "Reddi et al. counter-example: f_t(x) = 1010x if t mod 101 = 1 else −10x on [−1, 1]"
        f" (β1 = 0.9, β2 = 0.99, α_t = {alpha:g}/√t)"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def run_demo(
    steps: int = DEFAULT_STEPS,
    *,
    out: Path | str,
    seed: int = 0,
    stochastic: bool = True,
    alpha: float = DEFAULT_ALPHA,
    runs: int = STOCHASTIC_RUNS,
) -> str:
    """Run Adam and AMSGrad on the Reddi problem, write ``out/reddi.png``, return a summary.

    Runs the deterministic variant, and the stochastic one too unless ``stochastic=False``
    (as ``runs`` seeded copies side by side, reported by their mean). The summary lists
    the final x and R_T/T per optimizer and variant (Def 1.2.14).
    """
    results = [
        run_online(name, steps, stochastic=variant, seed=seed, alpha=alpha, runs=k)
        for variant, k in ([(False, 1), (True, runs)] if stochastic else [(False, 1)])
        for name in REDDI_OPTIMIZERS
    ]
    path = Path(out) / "reddi.png"
    _plot(results, path, alpha)
    lines = [
        f"Reddi et al. counter-example: T = {steps}, α_t = {alpha:g}/√t, β = {BETAS},"
        " no bias correction, Θ = [−1, 1], x_1 = 0; the optimum is x = −1",
        f"{'variant':<24}{'optimizer':<10}{'final x':>9}{'R_T/T':>9}",
    ]
    for run in results:
        copies = run.x.shape[1]
        kind = f"stochastic (mean of {copies})" if run.stochastic else "deterministic"
        x_end, avg = float(run.x_final.mean()), float(run.average_regret[-1].mean())
        line = f"{kind:<24}{run.name:<10}{x_end:>+9.4f}{avg:>9.4f}"
        if copies > 1:
            below = float((run.x_final < 0).to(torch.float64).mean())
            line += f"   ({below:.0%} of runs end below 0)"
        lines.append(line)
    lines.append(f"plot: {path}")
    return "\n".join(lines)
