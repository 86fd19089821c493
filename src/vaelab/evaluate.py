"""Evaluation of trained models: the empirical risk of any model, and for VAEs the test
ELBO, the importance-sampled log-likelihood (Burda et al. 2015), reconstruction error and
active units, batched so that k = 5000 samples fit in bounded memory."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vaelab.data import Batches, atomic_write
from vaelab.errors import CheckpointError, VaelabError, is_count
from vaelab.runs import finite_or_none, load_run, load_test_batches


@contextlib.contextmanager
def seeded(seed: int, device: str | torch.device = "cpu") -> Iterator[None]:
    """Run the block with torch's CPU RNG — and for a CUDA or MPS ``device`` that device's
    RNG — seeded to ``seed``; the caller's RNG states come back afterwards."""
    device = torch.device(device)
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        with torch.random.fork_rng(devices=[index], device_type="cuda"), torch.cuda.device(index):
            torch.random.default_generator.manual_seed(seed)
            torch.cuda.manual_seed(seed)
            yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        if device.type != "mps":
            yield
            return
        state = torch.mps.get_rng_state()  # fork_rng has no mps branch in every torch ≥ 2.3
        torch.mps.manual_seed(seed)
        try:
            yield
        finally:
            torch.mps.set_rng_state(state)


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """The block runs with ``model`` in eval mode; its train/eval mode comes back after,
    also after an error."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def mean_objective(model: torch.nn.Module, batches: Batches, seed: int = 0) -> float:
    """The model's objective averaged over every example of ``batches`` (the empirical risk,
    Def 1.2.4). Any sampling inside the objective uses a private, seeded RNG stream, so the
    number is reproducible and the caller's RNG state is left untouched."""
    total = torch.zeros((), dtype=torch.float64)
    with evaluating(model), seeded(seed, batches.device):
        for x, y in batches:
            total += model.objective(x, y).sum().cpu().double()  # (B,) -> ()
    return float(total) / len(batches.data)


def default_max_rows(device: str | torch.device) -> int:
    """Decoder rows per chunk of :func:`log_likelihood`: 1024 on the CPU, where small chunks
    are also fast (3 MiB of MNIST logits stay in the caches and reuse freed memory;
    32768-row chunks ran 2x slower, mostly in page faults of fresh 100 MiB allocations);
    32768 on an accelerator, where each chunk should fill the device."""
    return 1024 if torch.device(device).type == "cpu" else 32768


def check_samples(k: object, max_rows: object = None) -> None:
    """``k`` importance samples and ``max_rows`` must be whole numbers ≥ 1."""
    for name, value in (("k", k), ("max_rows", 1 if max_rows is None else max_rows)):
        if not is_count(value):
            raise VaelabError(f"{name} must be a whole number ≥ 1, not {value!r}")


@torch.no_grad()
def log_likelihood(
    model, x: torch.Tensor, k: int, c: torch.Tensor | None = None, max_rows: int | None = None
) -> torch.Tensor:
    """Importance-sampled log p(x) ≈ log (1/k) Σ_i p(x, z_i)/q(z_i | x), z_i ~ q(z | x), per
    image (B,) in float64 on the CPU. The k samples are drawn in chunks of about
    ``max_rows`` decoder rows (images × samples; at least one sample per image; default
    :func:`default_max_rows`) and combined with a running log-sum-exp, so memory stays
    bounded. The chunking decides which draw of the seeded stream goes to which image, so
    it is part of what a seed reproduces."""
    check_samples(k, max_rows)
    if x.shape[0] == 0:
        raise VaelabError("log_likelihood of an empty batch")
    if max_rows is None:
        max_rows = default_max_rows(x.device)
    posterior = model.posterior(x, c)
    chunk = max(1, max_rows // x.shape[0])
    # float64 where the device has it (mps has not): the sum runs over up to k / chunk chunks
    wide = torch.float32 if x.device.type == "mps" else torch.float64
    acc = torch.full((x.shape[0],), -math.inf, dtype=wide, device=x.device)
    for start in range(0, k, chunk):
        lw = model.log_weights(x, min(chunk, k - start), posterior, c)  # (B, kc)
        acc = torch.logaddexp(acc, torch.logsumexp(lw.to(wide), dim=1))
    return acc.cpu().double() - math.log(k)


def _sum_mse_per_pixel(recon: torch.Tensor, x: torch.Tensor) -> float:
    """Σ over images of the per-pixel mean squared error of reconstructions (B, C, H, W)."""
    return float((recon - x).square().mean(dim=(1, 2, 3)).sum())


@torch.no_grad()
def evaluate_vae(
    model,
    batches: Batches,
    *,
    k: int = 5000,
    seed: int = 0,
    progress: bool = True,
    max_rows: int | None = None,
) -> dict[str, Any]:
    """Test ELBO, NLL with k importance samples (nats, and bits/dim for binarised images
    under a Bernoulli likelihood; with its standard error over the test images, which says
    how far another test set of this size could move it),
    reconstruction MSE per pixel and active units (Var_x[μ_j(x)] > 0.01, Burda et al. 2015)
    over ``batches``. ``max_rows``: see :func:`log_likelihood`."""
    check_samples(k, max_rows)
    max_rows = max_rows or default_max_rows(batches.device)
    n = len(batches.data)
    dims = math.prod(batches.data.image_shape)
    discrete = model.likelihood == "bernoulli" and batches.binarize != "none"
    sums = {"elbo": 0.0, "mse": 0.0}
    mus, lls = [], []
    with evaluating(model), seeded(seed, batches.device):
        bar = tqdm(
            total=n,
            desc=f"eval (k={k})",
            unit="img",
            disable=None if progress else True,
            leave=False,
        )  # None: off when not a terminal
        for x, y in batches:
            c = model.condition(y)  # None unless conditional
            mu, logvar = model.posterior(x, c)
            mus.append(mu.cpu().double())
            sums["elbo"] += float(model.elbo(x, c=c).cpu().double().sum())
            lls.append(log_likelihood(model, x, k, c, max_rows))  # (B,) float64
            sums["mse"] += _sum_mse_per_pixel(model.decode(mu, c), x)
            bar.update(len(x))
        bar.close()
    mu = torch.cat(mus)  # (N, Z)
    # a variance across one image is undefined (NaN, which would read as 0 active units)
    active = int((mu.var(dim=0) > 0.01).sum()) if n > 1 else None
    ll = torch.cat(lls)  # (N,) log p(x) per image
    nll = -float(ll.mean())
    return {
        "n_images": n,
        "k": k,
        "seed": seed,
        # with the seed, the chunking decides the draws: a record names all it depends on
        "batch_size": batches.batch_size,
        "max_rows": max_rows,
        "device": str(batches.device),
        "elbo": sums["elbo"] / n,
        "nll": nll,
        "nll_stderr": float(ll.std()) / math.sqrt(n) if n > 1 else None,  # over test images
        # bits/dim of a discrete distribution: binary pixels under a Bernoulli likelihood; a
        # density on grey values (or a Bernoulli read at grey values) has no such number
        "bits_per_dim": nll / (dims * math.log(2)) if discrete else None,
        "recon_mse_per_pixel": sums["mse"] / n,
        "active_units": active,
        "latent_dim": mu.shape[1],
    }


@torch.no_grad()
def evaluate_ae(
    model, batches: Batches, *, k=0, seed=0, progress=False, max_rows=None
) -> dict[str, Any]:
    """Reconstruction MSE per pixel and per image (the thesis's MSE, Ex 2.2.2); the keyword
    arguments are unused (nothing is sampled)."""
    total = 0.0
    with evaluating(model):
        for x, _ in batches:
            total += _sum_mse_per_pixel(model.reconstruct(x), x)
    n = len(batches.data)
    per_pixel = total / n
    return {"n_images": n, "recon_mse_per_pixel": per_pixel,
            "recon_mse_per_image": per_pixel * math.prod(batches.data.image_shape)}  # fmt: skip


@torch.no_grad()
def evaluate_classifier(
    model, batches: Batches, *, k=0, seed=0, progress=False, max_rows=None
) -> dict[str, Any]:
    """Test accuracy and cross-entropy of a classifier; the keyword arguments are unused."""
    correct, nll = 0, 0.0
    with evaluating(model):
        for x, y in batches:
            logits = model.logits(x)
            correct += int((logits.argmax(1) == y).sum())
            nll += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
    n = len(batches.data)
    return {"n_images": n, "accuracy": correct / n, "cross_entropy": nll / n}


EVALUATIONS = {"vae": evaluate_vae, "ae": evaluate_ae, "classifier": evaluate_classifier}
"""model.kind -> its evaluation, called as ``(model, batches, *, k, seed, progress, max_rows)``."""


def evaluate_run(
    run_dir: str | Path,
    k: int = 5000,
    limit: int = 0,
    seed: int = 0,
    batch_size: int = 100,
    cache=None,
    progress: bool = True,
    device: str = "cpu",
    max_rows: int | None = None,
) -> dict[str, Any]:
    """Evaluate a run folder on its test split; the record is appended to ``eval.json``."""
    check_samples(k, max_rows)
    cfg, model = load_run(run_dir, device)
    if cfg.model.kind not in EVALUATIONS:
        raise VaelabError(f"no evaluation for model.kind {cfg.model.kind!r}")
    batches = load_test_batches(cfg, cache, limit, batch_size, device)
    t0 = time.perf_counter()
    result = EVALUATIONS[cfg.model.kind](
        model, batches, k=k, seed=seed, progress=progress, max_rows=max_rows
    )
    result = {"split": cfg.data.test_split, "binarize": batches.binarize, **result,
              "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip
    append_json(Path(run_dir) / "eval.json", result)
    return result


def append_json(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` to the JSON list in ``path``, atomically; an inf or NaN in it is
    written as null (JSON has neither)."""
    history = []
    if path.exists():
        try:
            history = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:  # also bad UTF-8
            raise CheckpointError(f"{path} is corrupt ({e}); move it away to start afresh") from e
        if not isinstance(history, list):
            raise CheckpointError(f"{path} is not a JSON list; move it away to start afresh")
    text = json.dumps([*history, _json_safe(record)], indent=1, allow_nan=False).encode()
    atomic_write(path, lambda f: f.write(text))


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float, however deeply nested, replaced by None."""
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, dict):
        return {key: _json_safe(v) for key, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def format_table(result: dict[str, Any]) -> str:
    """A two-column table of an evaluation record."""
    width = max(len(key) for key in result)
    rows = []
    for key, value in result.items():
        shown = (
            f"{value:.4f}" if isinstance(value, float) else "n/a" if value is None else str(value)
        )
        rows.append(f"{key:<{width}}  {shown}")
    return "\n".join(rows)
