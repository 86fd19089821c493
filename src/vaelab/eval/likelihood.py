"""Evaluation of trained models: the empirical risk of any model, and for VAEs the test
ELBO, the importance-sampled log-likelihood (Burda et al. 2015), reconstruction error and
active units, batched so that k = 5000 samples fit in bounded memory."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vaelab.data.batches import Batches
from vaelab.device import seeded, wide_float
from vaelab.errors import CheckpointError, VaelabError, is_count
from vaelab.eval.common import evaluating
from vaelab.files import atomic_write, finite_or_none
from vaelab.runs.load import load_run, load_test_batches


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
    wide = wide_float(x.device)  # the sum runs over up to k / chunk chunks
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
    discrete = model.discrete_likelihood and batches.binarize != "none"
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
            mu = model.encode(x, c)  # the posterior mean, (B, Z)
            mus.append(mu.cpu().double())
            sums["elbo"] += float(model.elbo(x, c=c).cpu().double().sum())
            lls.append(log_likelihood(model, x, k, c, max_rows))  # (B,) float64
            sums["mse"] += _sum_mse_per_pixel(model.reconstruct(x, c), x)  # the model's own
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


@torch.no_grad()
def evaluate_codes(
    model, batches: Batches, *, k=0, seed=0, progress=False, max_rows=None
) -> dict[str, Any]:
    """A model with discrete codes (a VQ-VAE): reconstruction MSE per pixel, how its
    codebook is used — perplexity exp(H) of the entries' frequencies over the split, and
    the fraction of entries used at all — the code prior's −log p(codes), and, for a
    Bernoulli decoder (``train.loss = "bce_sum"``) on binarised images, the bound
    −log p(x) ≤ reconstruction − log p(codes) in nats. The keyword arguments are unused."""
    sums, counts = {"mse": 0.0, "rec": 0.0, "code_nll": 0.0}, None
    with evaluating(model):
        for x, y in batches:
            t = model.terms(x, y)
            sums["rec"] += float(t["reconstruction"].sum())
            sums["code_nll"] += float(t["code_nll"].sum())
            codes = model.codes(x)  # (B, T), once: the reconstruction is decoded from them
            sums["mse"] += _sum_mse_per_pixel(model.decode_codes(codes), x)
            n_k = torch.bincount(codes.flatten(), minlength=model.quantizer.codebook.shape[0])
            counts = n_k if counts is None else counts + n_k
    n = len(batches.data)
    p = counts.double() / counts.sum()
    entropy = -float((p[p > 0] * p[p > 0].log()).sum())
    # a conditional prior gives −log p(codes | y): its sum bounds −log p(x | y), not −log p(x)
    bound = model.loss == "bce_sum" and batches.binarize != "none" and not model.conditional
    return {"n_images": n, "recon_mse_per_pixel": sums["mse"] / n,
            "codebook_perplexity": math.exp(entropy), "codebook_used": float((counts > 0).double().mean()),
            "code_nll": sums["code_nll"] / n,
            "nll_bound": (sums["rec"] + sums["code_nll"]) / n if bound else None}  # fmt: skip


EVALUATIONS = (
    ("log_weights", evaluate_vae),
    ("read", evaluate_classifier),
    ("codes", evaluate_codes),
    ("decode", evaluate_ae),
)
"""What a model can do -> its evaluation, the first that applies, called as
``(model, batches, *, k, seed, progress, max_rows)``: a likelihood where it has one, else a
classifier's accuracy, else the reconstruction error."""


def evaluation_for(model):
    """The evaluation of :data:`EVALUATIONS` for what ``model`` can do."""
    for verb, evaluate in EVALUATIONS:
        if model.can(verb):
            return evaluate
    raise VaelabError(f"no evaluation for a {type(model).__name__}: it can none of "
                      f"{', '.join(v for v, _ in EVALUATIONS)}")  # fmt: skip


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
    split: str | None = None,
) -> dict[str, Any]:
    """Evaluate a run folder on its test split (or ``split``: choose on ``valid``, report on
    ``test``); the record, which names the split, is appended to ``eval.json``."""
    check_samples(k, max_rows)
    cfg, model = load_run(run_dir, device)
    evaluate = evaluation_for(model)
    batches = load_test_batches(cfg, cache, limit, batch_size, device, split)
    t0 = time.perf_counter()
    result = evaluate(model, batches, k=k, seed=seed, progress=progress, max_rows=max_rows)
    result = {"split": split or cfg.data.test_split, "binarize": batches.binarize, **result,
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
