"""Run configuration: TOML files read into typed dataclasses, overridable from the CLI.

``--set section.key=value`` parses ``value`` as TOML (``--set model.widths=[512,256]``),
falling back to a plain string; an unknown section or key, or a value of the wrong type,
is a :class:`~vaelab.errors.ConfigError` that names it.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaelab.config_checks import validate
from vaelab.errors import ConfigError
from vaelab.parts import (  # noqa: F401  (re-exported)
    PARTS,
    CodePriorConfig,
    ExPostConfig,
    PosteriorConfig,
    PriorConfig,
    register_part,
)


@dataclass
class DataConfig:
    name: str = "mnist"
    """data set name in the cache (``vaelab data list``; import files with ``vaelab data import-*``)"""
    split: str = "train"
    """split to train on"""
    test_split: str = "test"
    """split for the per-epoch test (validation) loss and early stopping; no images of ``split``
    (MNIST: test, or valid with split = train50k)"""
    limit: int = 0
    """use only the first N training images (0 = all)"""
    test_limit: int = 0
    """use only the first N test images (0 = all)"""
    binarize: str = "none"
    """none | dynamic (Bernoulli per batch) | static (once, fixed seed)"""
    only_classes: list[str] = field(default_factory=list)
    """keep only the images of these classes in both splits, e.g. ["3"] (one-class
    anomaly detection); label indices keep their meaning"""


def _builtin_parts() -> None:
    """The parts vaelab ships register themselves when :mod:`vaelab.models` is imported
    (the mixture priors: :mod:`vaelab.models.mixtures`); a config that names one loads
    them first."""
    import vaelab.models  # noqa: F401


@dataclass
class ModelConfig:
    kind: str = "ae"
    """ae (autoencoder, Def 2.1.5), vae, rae (regularised AE), wae (Wasserstein AE, MMD),
    or classifier (a CNN judge of generated images)"""
    arch: str = "mlp"
    """mlp (fully connected, Def 2.3.1-2.3.3) or conv (convolution + pooling, §1.3)"""
    widths: list[int] = field(default_factory=lambda: [512, 256, 128])
    """the encoder's hidden widths (never growing, Def 2.1.1); the decoder mirrors them"""
    channels: list[int] = field(default_factory=lambda: [32, 64])
    """conv arch: channels of each conv + 2x2 max-pool block of the encoder"""
    bottleneck: int = 2
    """latent dimension n_b (Def 2.1.5)"""
    activation: str = "relu"
    """hidden activation (Def 1.1.1-1.1.2): relu, leaky_relu, sigmoid, tanh, identity"""
    likelihood: str = "bernoulli"
    """vae: decoder likelihood p(x|z): bernoulli, gaussian, gaussian_identity,
    continuous_bernoulli"""
    beta: float = 1.0
    """weight of the code-space term: vae: the ELBO's KL (β ≠ 1: β-VAE; only with k = 1);
    rae: ½‖z‖²; wae: the MMD to the prior"""
    k: int = 1
    """vae: importance samples in the training objective (1 = ELBO, k > 1 = IWAE bound)"""
    warmup: int = 0
    """vae: epochs over which the KL's weight rises linearly from 0 to β (KL warm-up, Bowman
    et al. 2016, Sønderby et al. 2016; Tomczak & Welling 2018 use 100); 0 = none; k = 1 only"""
    top_widths: list[int] = field(default_factory=lambda: [100, 100])
    """vae2: hidden widths between the two stochastic layers (z₁ -> z₂ never growing)"""
    top_bottleneck: int = 50
    """vae2: dimension of the top layer z₂ (``bottleneck`` is the bottom layer z₁'s)"""
    ladder: bool = False
    """vae2: top-down (ladder) inference, Sønderby et al. 2016: q(z₁ | z₂, x) combines the
    bottom-up Gaussian with p(z₁ | z₂) by precision"""
    sigma: float = 0.1
    """vae, gaussian likelihood: the fixed σ (initial σ when learn_sigma)"""
    learn_sigma: bool = False
    """vae, gaussian likelihood: learn one σ per pixel (floored at 1/255, one grey level)"""
    conditional: bool = False
    """vae: condition encoder and decoder on the label (a CVAE)"""
    prior: PriorConfig = field(default_factory=PriorConfig)
    """vae: [model.prior], the prior p(z) (kind and its options)"""
    posterior: PosteriorConfig = field(default_factory=PosteriorConfig)
    """vae: [model.posterior], the approximate posterior q(z | x)"""
    expost: ExPostConfig = field(default_factory=ExPostConfig)
    """ae, rae: [model.expost], the density fitted to the training codes after training"""
    codebook: int = 256
    """vq_vae: codebook entries K"""
    commitment: float = 0.25
    """vq_vae: weight β of the commitment loss ‖z_e − sg(e)‖²"""
    ema: bool = False
    """vq_vae: update the codebook by exponential moving averages (decay 0.99) instead of
    its loss ‖sg(z_e) − e‖²"""
    code_prior: CodePriorConfig = field(default_factory=CodePriorConfig)
    """vq_vae: [model.code_prior], the learned prior over the codes"""
    decoder_penalty: str = "l2"
    """rae: the decoder regulariser: l2 (its weights' Σθ²), gp (‖∂D/∂z‖²), none"""
    penalty_weight: float = 1e-7
    """rae: the weight λ of the decoder regulariser"""
    image_shape: list[int] = field(default_factory=list)
    """(C, H, W) of the images; filled in from the data at training time"""
    classes: list[str] = field(default_factory=list)
    """class names (conditional VAE, classifier); filled in from the data at training time"""


@dataclass
class TrainConfig:
    epochs: int = 10
    """passes over the training split"""
    batch_size: int = 512
    """examples per optimisation step"""
    lr: float = 3e-4
    """learning rate α"""
    lr_decay: float = 1.0
    """the learning rate falls geometrically per epoch to lr·lr_decay in the last epoch"""
    optimizer: str = "adam"
    """adam, amsgrad, sgd, gd (vaelab.thesis.optim) or any torch.optim class name"""
    loss: str = "mse"
    """ae reconstruction loss: mse (sum over pixels, Ex 2.2.2), mse_mean, bce, bce_sum
    (a vae's loss is −ELBO with model.likelihood)"""
    seed: int = 0
    """seeds initialisation, batch order and sampling"""
    checkpoint_every: int = 1
    """write a checkpoint every N epochs (and always at the end)"""
    early_stopping: int = 0
    """stop after N epochs without a better test loss (0 = off); the run keeps the weights of
    its last epoch, and with keep_best those of the best one too"""
    keep_best: bool = False
    """keep the weights of the epoch with the best test loss (choose on data.test_split =
    "valid"): eval, sample, generate and the stages use them; training continues from the
    last epoch's"""
    test_every: int = 1
    """compute the test loss every N epochs (and always after the last); long runs save
    the time of the others. Early stopping then decides only at tested epochs, still
    counting epochs: patience 5 with test_every 10 stops at the first test that fails to
    improve"""
    compile: bool = False
    """compile the objective with torch.compile (eager again, with a warning, where that fails)"""
    precision: str = "auto"
    """auto, fp32 or bf16: bf16 runs the forward pass's matmuls in bfloat16 (torch.autocast;
    weights, optimizer and losses stay fp32), faster only where the CPU (AVX512-BF16, AMX)
    or GPU (bf16 tensor cores) has bf16 units; auto picks bf16 there and fp32 elsewhere,
    when the run is created, and the run's config records the choice"""
    device: str = "cpu"
    """cpu, cuda, cuda:1, mps …"""
    threads: int = 0
    """torch CPU threads (0 = torch's default)"""
    tensorboard: bool = False
    """write TensorBoard event files in RUN/tensorboard: every metric term and the learning
    rate per epoch (needs the tensorboard package: pip install 'vaelab[tensorboard]')"""
    tensorboard_images: int = 5
    """with tensorboard: sample and reconstruction grids every N epochs (0: none)"""


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS: dict[str, type] = typing.get_type_hints(Config)


def _check_value(where: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the annotation ``hint`` (int, float, str, bool, list[int])."""
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_check_value(f"{where}[{i}]", v, item) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value  # a [model.*] sub-table, checked by _part
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (hint in (int, float) and isinstance(value, bool)) or not isinstance(value, hint):
        names = {int: "an integer", float: "a number", str: "text", bool: "true or false"}
        shown = str(value).lower() if isinstance(value, bool) else repr(value)
        raise ConfigError(f"{where} must be {names.get(hint, hint.__name__)}, got {shown}")
    return value


def from_dict(raw: dict[str, Any]) -> Config:
    """Build a :class:`Config` from nested dicts, rejecting unknown sections and keys."""
    cfg = Config()
    for section, values in raw.items():
        if section not in SECTIONS:
            owner = next(
                (s for s, t in SECTIONS.items() if section in typing.get_type_hints(t)), None
            )
            hint = f"; {section} belongs in [{owner}]" if owner else ""
            raise ConfigError(f"unknown config section [{section}] (known: {', '.join(SECTIONS)})"
                              f"{hint}")  # fmt: skip
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table")
        obj = getattr(cfg, section)
        hints = typing.get_type_hints(type(obj))
        for key, value in values.items():
            if key not in hints:
                raise ConfigError(f"unknown config key {section}.{key} (known: {', '.join(hints)})")
            if key in PARTS and section == "model":
                value = _part(key, value)
            setattr(obj, key, _check_value(f"{section}.{key}", value, hints[key]))
    validate(cfg)
    return cfg


def _part(table: str, values: Any) -> Any:
    """The typed options of sub-table [model.TABLE] from its dict: the dataclass its kind
    registered (:data:`PARTS`); unknown kinds and keys are ConfigErrors naming them."""
    where = f"model.{table}"
    _builtin_parts()
    kinds = PARTS[table]
    if not isinstance(values, dict):
        raise ConfigError(f"[{where}] must be a table (e.g. {where}.kind = {next(iter(kinds))!r})")
    default = typing.get_type_hints(ModelConfig)[table]().kind
    kind = values.get("kind", default)
    if kind not in kinds:
        raise ConfigError(f"unknown {where}.kind {kind!r} (known: {', '.join(kinds)})")
    options = kinds[kind]()
    hints = typing.get_type_hints(type(options))
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"unknown config key {where}.{key} for kind {kind!r} (known: "
                              f"{', '.join(hints)})")  # fmt: skip
        setattr(options, key, _check_value(f"{where}.{key}", value, hints[key]))
    return options


def to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    return dataclasses.asdict(cfg)


RESUME_OVERRIDES = ("train.epochs", "train.early_stopping", "train.checkpoint_every",
                    "train.test_every", "train.device", "train.threads", "train.compile",
                    "train.precision", "train.tensorboard", "train.tensorboard_images")  # fmt: skip
"""The settings that may change when a run continues; the rest is fixed by its checkpoint."""

FILLED_IN = ("model.image_shape", "model.classes")
"""Settings training fills in from the data."""


def differences(old: Config, new: Config, ignore: tuple[str, ...] = ()) -> list[str]:
    """'section.key: old -> new' for every setting in which ``new`` differs from ``old``,
    leaving out the keys in ``ignore``."""
    a, b = to_dict(old), to_dict(new)
    return [f"{s}.{k}: {a[s][k]!r} -> {b[s][k]!r}" for s in a for k in a[s]
            if f"{s}.{k}" not in ignore and a[s][k] != b[s][k]]  # fmt: skip


def key_type(path: str) -> Any:
    """The type annotation of 'section.key' or 'model.table.key' (None for an unknown one,
    refused later; a sub-table's key is looked up in every kind it has)."""
    section, _, key = path.partition(".")
    if section not in SECTIONS:
        return None
    table, _, sub = key.partition(".")
    if sub and section == "model" and table in PARTS:
        _builtin_parts()
        hints = [typing.get_type_hints(c).get(sub) for c in PARTS[table].values()]
        return next((h for h in hints if h is not None), None)
    return typing.get_type_hints(SECTIONS[section]).get(key)


def not_toml(path: str, raw: str, hint: Any) -> ConfigError:
    what = {int: "an integer", float: "a number"}.get(hint, "a TOML value")
    bare_dot = raw.strip().lstrip("+-").startswith(".")
    more = " (TOML writes 0.001 or 1e-3, not .001)" if hint is float and bare_dot else ""
    if typing.get_origin(hint) is list and "," in raw and not raw.strip().startswith("["):
        more = f" (a list is written in brackets: [{raw.strip()}])"
    return ConfigError(f"{path} = {raw.strip()!r} is not {what}{more}")


def parse_override(text: str) -> tuple[str, str, Any]:
    """'model.widths=[512,256]' -> ('model', 'widths', [512, 256]). Values are TOML; for a
    text key a bare word (amsgrad, 2024) is the string itself."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    path, raw = text.split("=", 1)
    section, key = path.strip().split(".", 1)
    hint = key_type(f"{section}.{key}")
    if section == "model" and key in PARTS and not raw.strip().startswith("{"):
        raise ConfigError(f"{section}.{key} is a table: set its keys, e.g. "
                          f"--set {section}.{key}.kind={raw.strip()}")  # fmt: skip
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        if hint not in (str, None):
            raise not_toml(f"{section}.{key}", raw, hint) from None
        value = raw  # a bare word such as amsgrad is a string
    if hint is str and not isinstance(value, str):
        value = raw.strip()  # data.name=2024 names a data set "2024"
    return section, key, value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a TOML config (or the defaults when ``path`` is None) and apply overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ConfigError(f"config file {path} not found") from e
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{path}: not valid TOML ({e})") from e
        if not raw:  # /dev/null or a file of comments would train the default model
            raise ConfigError(f"{path} sets nothing: a config names at least its [model] (see "
                              "configs/*.toml)")  # fmt: skip
    for text in overrides or []:
        section, key, value = parse_override(text)
        set_override(raw, section, key, value)
    return from_dict(raw)


def set_override(raw: dict[str, Any], section: str, key: str, value: Any) -> None:
    """Set ``section.key`` in the nested dicts ``raw``; 'prior.kind' sets a sub-table's key."""
    table = raw.setdefault(section, {})
    *parents, last = key.split(".")
    if parents and (section != "model" or parents[0] not in PARTS or len(parents) > 1):
        tables = ", ".join(f"model.{t}" for t in PARTS)
        raise ConfigError(f"{section}.{'.'.join(parents)} is not a table (tables: {tables})")
    for name in parents:
        if not isinstance(table.get(name, {}), dict):
            raise ConfigError(f"{section}.{name} is not a table, so {section}.{key} cannot be set")
        table = table.setdefault(name, {})
    table[last] = value


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):  # JSON's escapes are TOML's, but for DEL, which TOML also refuses
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007F")
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise ConfigError(f"cannot write {v!r} to TOML")


def dumps(cfg: Config) -> str:
    """The config as TOML text (round-trips through :func:`load_config`); sub-tables such as
    [model.prior] follow their section's keys."""
    lines: list[str] = []
    for section, values in to_dict(cfg).items():
        tables = {k: v for k, v in values.items() if isinstance(v, dict)}
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items() if k not in tables]
        lines.append("")
        for name, table in tables.items():
            lines.append(f"[{section}.{name}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
            lines.append("")
    return "\n".join(lines)
