"""Models: the protocol every model speaks (:mod:`.base`), the family registry (the one
extension point, :mod:`.registry`), the shared parts (priors, posteriors, likelihoods),
the networks (:mod:`.nets`) and the built-in families: ae, vae, classifier."""

from vaelab.models import flows, mixtures  # noqa: F401  (register "iaf", "mog", "vamp")
from vaelab.models.ae import Autoencoder
from vaelab.models.base import VERBS, LatentModel, Model
from vaelab.models.classifier import Classifier
from vaelab.models.registry import FAMILIES, Family, build_model, check_unused, register_family
from vaelab.models.stages import Stage, StageData
from vaelab.models.vae import VAE

__all__ = ["Model", "LatentModel", "VERBS", "Autoencoder", "VAE", "Classifier", "Family",
           "FAMILIES", "register_family", "build_model", "check_unused", "Stage", "StageData"]  # fmt: skip
