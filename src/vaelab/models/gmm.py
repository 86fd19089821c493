"""The ex-post density of a deterministic autoencoder: a Gaussian mixture fitted to the
codes of its training images after training (Ghosh et al. 2020), so that an AE, RAE or WAE
samples. ``[model.expost] components = k, covariance = "full" | "diag"``; k = 1 with a full
covariance is the closed-form Gaussian of "AE + Gaussian" (stage ``expost_gaussian``),
k > 1 is fitted by EM (stage ``expost_gmm``), seeded, in float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaelab.config import ExPostConfig
from vaelab.errors import ConfigError
from vaelab.models.priors import GaussianPrior, Prior, draw_components
from vaelab.models.stages import ExPost

COVARIANCES = ("full", "diag")
REG = 1e-6
"""Added to every covariance's diagonal (codes that collapse onto a line keep a density)."""


def _check_covariance(covariance: str) -> None:
    if covariance not in COVARIANCES:
        raise ConfigError(f"model.expost.covariance must be one of {', '.join(COVARIANCES)}, "
                          f"got {covariance!r}")  # fmt: skip


def _cholesky(cov: Tensor) -> Tensor:
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype)
    return torch.linalg.cholesky(cov + REG * eye)


def component_log_probs(z: Tensor, means: Tensor, scale_tril: Tensor) -> Tensor:
    """log N(z_n; μ_k, L_k L_kᵀ) for codes z (N, Z) and K components: (N, K)."""
    diff = z.unsqueeze(0) - means.unsqueeze(1)  # (K, N, Z)
    sol = torch.linalg.solve_triangular(scale_tril, diff.transpose(1, 2), upper=False)  # (K,Z,N)
    maha = sol.square().sum(1)  # (K, N)
    logdet = torch.log(torch.diagonal(scale_tril, dim1=-2, dim2=-1)).sum(-1)  # (K,)
    return (-0.5 * maha - logdet[:, None] - 0.5 * z.shape[1] * math.log(2 * math.pi)).T


def fit_gmm(z: Tensor, k: int, covariance: str = "full", seed: int = 0, iters: int = 300,
            tol: float = 1e-8) -> dict[str, Tensor]:  # fmt: skip
    """EM for a k-component Gaussian mixture on codes z (N, Z), in float64: means start at
    k distinct codes drawn with ``seed``, covariances at the codes' own, weights equal; it
    stops when the mean log-likelihood gains less than ``tol``. Returns float32 ``means``
    (K, Z), ``scale_tril`` (K, Z, Z; diagonal for "diag") and ``log_weights`` (K,)."""
    _check_covariance(covariance)
    z = z.double()
    n, dim = z.shape
    if n < k:
        raise ConfigError(f"{n} codes cannot fit {k} mixture components")
    g = torch.Generator().manual_seed(seed)
    means = z[torch.randperm(n, generator=g)[:k]].clone()  # (K, Z)
    base = torch.cov(z.T).reshape(dim, dim)
    if covariance == "diag":
        base = torch.diag(torch.diagonal(base))
    tril = _cholesky(base).expand(k, dim, dim).clone()  # (K, Z, Z)
    log_w = torch.full((k,), -math.log(k), dtype=z.dtype)
    last = -math.inf
    for _ in range(iters):
        joint = component_log_probs(z, means, tril) + log_w  # E-step, (N, K)
        total = torch.logsumexp(joint, dim=1)  # (N,)
        resp = torch.exp(joint - total[:, None])  # responsibilities, (N, K)
        nk = resp.sum(0) + 10 * torch.finfo(z.dtype).eps  # (K,)
        log_w = torch.log(nk / n)  # M-step
        means = (resp.T @ z) / nk[:, None]  # (K, Z)
        diff = z.unsqueeze(0) - means.unsqueeze(1)  # (K, N, Z)
        cov = torch.einsum("nk,kni,knj->kij", resp, diff, diff) / nk[:, None, None]  # (K,Z,Z)
        if covariance == "diag":
            cov = torch.diag_embed(torch.diagonal(cov, dim1=-2, dim2=-1))
        tril = _cholesky(cov)
        mean_ll = total.mean().item()
        if mean_ll - last < tol:
            break
        last = mean_ll
    return {"means": means.float(), "scale_tril": tril.float(), "log_weights": log_w.float()}


class GMMPrior(Prior):
    """Σ_k π_k N(μ_k, L_k L_kᵀ), fitted after training (the stage ``expost_gmm``)."""

    title = "fitted mixture's"

    def __init__(self, means: Tensor, scale_tril: Tensor, log_weights: Tensor):
        super().__init__()
        self.dim = means.shape[1]
        self.register_buffer("means", means, persistent=False)  # (K, Z)
        self.register_buffer("scale_tril", scale_tril, persistent=False)  # (K, Z, Z)
        self.register_buffer("log_weights", log_weights, persistent=False)  # (K,)

    def log_prob(self, z: Tensor) -> Tensor:
        flat = z.reshape(-1, self.dim).double()  # (…, Z) -> (N, Z)
        per = component_log_probs(flat, self.means.double(), self.scale_tril.double())
        out = torch.logsumexp(per + self.log_weights.double(), dim=1)  # (N,)
        return out.reshape(z.shape[:-1]).to(z.dtype)

    def sample(self, n, generator=None, temperature=1.0) -> Tensor:
        """A component k ~ π, then z = μ_k + T·L_k ε."""
        k, eps = draw_components(self.log_weights, n, self.dim, generator)  # (n,), (n, Z)
        return self.means[k] + temperature * (self.scale_tril[k] @ eps[:, :, None])[..., 0]


def gaussian_fit(z: Tensor) -> dict[str, Tensor]:
    """Mean and Cholesky factor of the covariance of codes z (N, Z), in float64 then float32
    (a jitter of 1e-6 on the diagonal keeps the factor defined)."""
    z = z.double()
    cov = torch.cov(z.T).reshape(z.shape[1], z.shape[1])
    return {"mean": z.mean(0).float(), "scale_tril": _cholesky(cov).float()}


EXPOST_GAUSSIAN = ExPost(name="expost_gaussian", fit_codes=gaussian_fit, prior=GaussianPrior,
                         label="gaussian")  # fmt: skip
"""Fit N(mean, cov) to the codes of (up to 20,000) training images after training."""


def expost_stage(options: ExPostConfig) -> ExPost:
    """The stage ``[model.expost]`` asks for: the closed-form Gaussian for one full
    component (the stage of every AE trained before mixtures existed), else EM."""
    if options.components < 1:
        raise ConfigError(f"model.expost.components must be >= 1, got {options.components}")
    _check_covariance(options.covariance)
    if options.components == 1 and options.covariance == "full":
        return EXPOST_GAUSSIAN
    k, cov = options.components, options.covariance

    def fit(codes: Tensor) -> dict[str, Tensor]:
        return fit_gmm(codes, k, cov)

    return ExPost(name="expost_gmm", fit_codes=fit, prior=GMMPrior,
                  label=f"gmm{k}" + ("-diag" if cov == "diag" else ""))  # fmt: skip
