"""vaelab: autoencoders and variational autoencoders on images.

Built from the definitions of the thesis *On variational autoencoders: theory and
applications*; each public piece cites the definition it implements (see
docs/thesis-map.md). Sub-packages: ``thesis`` (the chapter-1 blocks), ``data``, ``models``
(the family registry: :func:`register_family`), ``train``, ``runs``, ``eval``, ``viz``,
``cli``; modules ``config``, ``files``, ``device``, ``generate``, ``reproduce``.
"""

import importlib

from vaelab.errors import CheckpointError, ConfigError, DataError, VaelabError

__version__ = "0.1.0"

# The public names load on first use (PEP 562): `import vaelab` and the CLI's start stay
# free of torch, so `vaelab --help` is quick and a Ctrl-C during the heavy imports of a
# command is caught by the CLI like any other.
_LAZY = {
    "Autoencoder": "vaelab.models.ae",
    "LatentModel": "vaelab.models.base",
    "Model": "vaelab.models.base",
    "Classifier": "vaelab.models.classifier",
    "LIKELIHOODS": "vaelab.models.likelihoods",
    "build_model": "vaelab.models.registry",
    "register_family": "vaelab.models.registry",
    "Stage": "vaelab.models.stages",
    "VAE": "vaelab.models.vae",
    "GenericAdaptive": "vaelab.thesis.adaptive",
    "adam_moments": "vaelab.thesis.adaptive",
    "sgd_moments": "vaelab.thesis.adaptive",
    "ImageLayer": "vaelab.thesis.images",
    "avg_pool": "vaelab.thesis.images",
    "conv2d": "vaelab.thesis.images",
    "flatten": "vaelab.thesis.images",
    "make_grid": "vaelab.thesis.images",
    "max_pool": "vaelab.thesis.images",
    "min_pool": "vaelab.thesis.images",
    "normalize": "vaelab.thesis.images",
    "quantize": "vaelab.thesis.images",
    "save_png": "vaelab.thesis.images",
    "unflatten": "vaelab.thesis.images",
    "LOSSES": "vaelab.thesis.losses",
    "bce": "vaelab.thesis.losses",
    "bce_sum": "vaelab.thesis.losses",
    "cross_entropy": "vaelab.thesis.losses",
    "empirical_risk": "vaelab.thesis.losses",
    "entropy": "vaelab.thesis.losses",
    "kl_divergence": "vaelab.thesis.losses",
    "kl_normal_std": "vaelab.thesis.losses",
    "linear_error": "vaelab.thesis.losses",
    "mse": "vaelab.thesis.losses",
    "mse_mean": "vaelab.thesis.losses",
    "squared_error": "vaelab.thesis.losses",
    "ACTIVATIONS": "vaelab.thesis.nn",
    "MLP": "vaelab.thesis.nn",
    "activation": "vaelab.thesis.nn",
    "compose": "vaelab.thesis.nn",
    "decoder_mlp": "vaelab.thesis.nn",
    "encoder_mlp": "vaelab.thesis.nn",
    "GD": "vaelab.thesis.optim",
    "SGD": "vaelab.thesis.optim",
    "Adam": "vaelab.thesis.optim",
    "AMSGrad": "vaelab.thesis.optim",
    "regret": "vaelab.thesis.optim",
    "make_optimizer": "vaelab.train.optimizers",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vaelab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "VaelabError", "DataError", "ConfigError", "CheckpointError",
    "normalize", "quantize", "flatten", "unflatten", "make_grid", "save_png",
    "conv2d", "avg_pool", "min_pool", "max_pool", "ImageLayer",
    "ACTIVATIONS", "activation", "MLP", "encoder_mlp", "decoder_mlp", "compose",
    "squared_error", "linear_error", "mse", "mse_mean", "bce", "bce_sum", "LOSSES",
    "LIKELIHOODS", "empirical_risk", "kl_divergence", "entropy", "cross_entropy",
    "kl_normal_std",
    "GD", "SGD", "Adam", "AMSGrad", "GenericAdaptive", "sgd_moments", "adam_moments",
    "regret", "make_optimizer",
    "Model", "LatentModel", "Autoencoder", "VAE", "Classifier", "Stage", "build_model",
    "register_family",
]  # fmt: skip
