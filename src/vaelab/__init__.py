"""vaelab: autoencoders and variational autoencoders on images.

Built from the definitions of the thesis *On variational autoencoders: theory and
applications*; each public piece cites the definition it implements (see
docs/thesis-map.md). Sub-packages: ``thesis`` (the chapter-1 blocks), ``data``, ``models``
(the family registry: :func:`register_family`), ``train``, ``runs``, ``eval``, ``viz``,
``cli``; modules ``config``, ``files``, ``device``, ``generate``, ``reproduce``.
"""

from vaelab.errors import CheckpointError, ConfigError, DataError, VaelabError
from vaelab.models.ae import Autoencoder
from vaelab.models.base import LatentModel, Model
from vaelab.models.classifier import Classifier
from vaelab.models.likelihoods import LIKELIHOODS
from vaelab.models.registry import build_model, register_family
from vaelab.models.stages import Stage
from vaelab.models.vae import VAE
from vaelab.thesis.adaptive import GenericAdaptive, adam_moments, sgd_moments
from vaelab.thesis.images import (
    ImageLayer,
    avg_pool,
    conv2d,
    flatten,
    make_grid,
    max_pool,
    min_pool,
    normalize,
    quantize,
    save_png,
    unflatten,
)
from vaelab.thesis.losses import (
    LOSSES,
    bce,
    bce_sum,
    cross_entropy,
    empirical_risk,
    entropy,
    kl_divergence,
    kl_normal_std,
    linear_error,
    mse,
    mse_mean,
    squared_error,
)
from vaelab.thesis.nn import ACTIVATIONS, MLP, activation, compose, decoder_mlp, encoder_mlp
from vaelab.thesis.optim import GD, SGD, Adam, AMSGrad, regret
from vaelab.train.optimizers import make_optimizer

__version__ = "0.1.0"

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
