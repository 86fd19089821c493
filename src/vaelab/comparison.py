"""`vaelab reproduce models`: every model family trained under one budget and judged the
same way, in one table (../shared/evaluation-protocol.md).

Each family of :data:`FAMILIES` is a few ``--set`` lines on top of :data:`BASE`: an MLP
784-512-256 with 16-d codes and a Bernoulli decoder (``train.loss = "bce_sum"`` for the
autoencoders) on dynamically binarised ``train50k``, the weights of the best epoch on
``valid`` kept. Per seed S a family trains one model on all ten digits
(``OUT/FAMILY/seed-S``) and, for the one-class AUROC, one per normal digit D of the preset
(``OUT/FAMILY/digit-D-seed-S``, on the ``train50k`` images of D; the score kind chosen on
``valid``, :func:`vaelab.oneclass.one_class`). Every member is an ordinary run folder, and
what is measured on it is kept as hashed stage files of that run (``table-likelihood``,
``table-judge``, ``scores-SPLIT``), so calling the command again continues where it stopped
and a model trained further is measured anew. The judge is a classifier run, trained into
``OUT/classifier`` unless one is given. :mod:`vaelab.comparison_report` writes the table.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

import vaelab
from vaelab.config import Config, load_config
from vaelab.data.batches import load_split
from vaelab.data.cache import fetch
from vaelab.errors import CheckpointError, VaelabError
from vaelab.eval.generation import Reference, judge, reference
from vaelab.eval.likelihood import evaluate_run
from vaelab.generate import generate, load_generator
from vaelab.oneclass import one_class
from vaelab.runs.folder import RunFolder
from vaelab.runs.load import load_run
from vaelab.train.groups import train_group


@dataclass(frozen=True)
class Family:
    name: str
    """as the table shows it"""
    sets: tuple[str, ...]
    """``--set`` lines on top of :data:`BASE`"""


# fmt: off
FAMILIES: dict[str, Family] = {
    "ae": Family("AE + Gaussian", ('model.kind="ae"',)),
    "ae-mixture": Family("AE + mixture (10)", ('model.kind="ae"', "model.expost.components=10")),
    "vae": Family("VAE", ('model.kind="vae"',)),
    "beta-vae": Family("β-VAE (β = 4)", ('model.kind="vae"', "model.beta=4.0")),
    "iwae": Family("IWAE (k = 5)", ('model.kind="vae"', "model.k=5")),
    "cvae": Family("CVAE (β = 2)", ('model.kind="vae"', "model.conditional=true", "model.beta=2.0")),  # as configs/mnist_cvae.toml
    "vamp": Family("VampPrior (500)", ('model.kind="vae"', 'model.prior.kind="vamp"', "model.prior.components=500", "model.warmup=10")),
    "iaf": Family("IAF (2 steps)", ('model.kind="vae"', 'model.posterior.kind="iaf"', "model.posterior.flows=2", "model.posterior.hidden=320")),
    "rae": Family("RAE-L2 + mixture (10)", ('model.kind="rae"', "model.beta=1e-4", 'model.decoder_penalty="l2"', "model.penalty_weight=1e-7", "model.expost.components=10")),
    "wae": Family("WAE-MMD (λ = 100)", ('model.kind="wae"', "model.beta=100.0")),  # as configs/mnist_wae.toml
    "vq": Family("VQ-VAE + code prior", ('model.kind="vq_vae"', "model.channels=[32, 64]", "model.codebook=256", "model.ema=true", 'model.code_prior.kind="transformer"')),
    "vae2": Family("two-layer VAE", ('model.kind="vae2"', "model.bottleneck=32", "model.top_widths=[32]", "model.top_bottleneck=16")),
}
"""The table's rows: family slug (``--families``) -> its name and settings. Shipped configs
give each family's own knobs (configs/mnist_rae.toml, mnist_wae.toml, mnist_vq.toml, …)."""

BASE = (
    'data.split="train50k"', 'data.test_split="valid"', 'data.binarize="dynamic"',
    'model.arch="mlp"', "model.widths=[512, 256]", "model.bottleneck=16", 'model.activation="relu"',
    'train.loss="bce_sum"', "train.batch_size=128", "train.lr=1e-3", "train.lr_decay=0.3",
    'train.optimizer="adam"', "train.keep_best=true", 'train.precision="fp32"',
)
"""What every family shares; fp32 on every machine, so the table does not depend on bf16 units."""
# fmt: on


@dataclass(frozen=True)
class Preset:
    epochs: int
    """the shared budget: training epochs of every family's model"""
    own_epochs: dict[str, int] = field(default_factory=dict)
    """families with a budget of their own (family slug -> epochs)"""
    seeds: int = 1
    k: int = 5000
    """importance samples of the test NLL"""
    test_images: int = 0
    """first test images of the NLL, the bound and the MSE (0: all 10,000)"""
    samples: int = 10000
    """generated images judged per model (conditional: as many per label)"""
    reference: int = 10000
    """training images the judge compares them with"""
    digits: tuple[str, ...] = ("5",)
    """normal digits of the one-class AUROC"""
    anomaly_epochs: int = 30
    anomaly_k: int = 1000
    """importance samples of the ``nll`` anomaly score"""
    valid_images: int = 0
    """valid images the score kind is chosen on (0: all)"""
    anomaly_test_images: int = 0
    """test images the AUROC is measured on (0: all)"""
    classifier: tuple[str, ...] = ()
    """settings of the judge's training beyond src/vaelab/classifier.toml"""


# fmt: off
PRESETS = {
    # about 70 minutes on 2 cores (docs/models-table.md says how that was estimated)
    "cpu": Preset(epochs=50, own_epochs={"vq": 10}, k=1000, test_images=2000, anomaly_epochs=30,
                  anomaly_k=100, valid_images=2000),
    # the protocol's numbers; about 20 hours on 2 cores, resumable
    "full": Preset(epochs=200, own_epochs={"vq": 40}, seeds=3, digits=("2", "3", "5"),
                   anomaly_epochs=100),
    # the tests' (not on the command line)
    "tiny": Preset(epochs=1, k=8, test_images=100, samples=200, reference=400, anomaly_epochs=1,
                   anomaly_k=4, valid_images=300, anomaly_test_images=300,
                   classifier=("train.epochs=1", "data.limit=1000", "data.test_limit=500")),
}
"""The VQ-VAE has a budget of its own: its epoch costs about 8x this table's VAE's (its
transformer code prior and convolutions; benchmarks/RESULTS.md, "Time per epoch")."""
# fmt: on

CLASSIFIER_CONFIG = Path(vaelab.__file__).parent / "classifier.toml"


def family_config(slug: str, seed: int, epochs: int, extra: list[str] = ()) -> Config:
    """The config of family ``slug``'s model of seed ``seed``."""
    return load_config(None, [*BASE, *FAMILIES[slug].sets, f"train.seed={seed}",
                              f"train.epochs={epochs}", *extra])  # fmt: skip


def epochs_of(p: Preset, slug: str, epochs: int | None) -> int:
    """A family's training epochs: ``epochs`` when given (every family), else the preset's."""
    return epochs or p.own_epochs.get(slug, p.epochs)


@dataclass(frozen=True)
class Judge:
    """The classifier that judges samples, and what it compares them with."""

    run: Path
    clf: torch.nn.Module
    ref: Reference
    ident: int
    """the classifier's weights, by the first 60 bits of their sha256 (a changed judge
    invalidates the kept judgements)"""
    accuracy: float
    """on the test split"""


def reproduce_models(out: Path, preset: str = "cpu", families: list[str] | None = None,
                     seeds: int | None = None, epochs: int | None = None,
                     classifier: str | Path | None = None, cache=None, progress: bool = True,
                     settings: list[str] = ()) -> Path:  # fmt: skip
    """Train (or continue) every member of ``families`` (all) for ``seeds`` seeds, measure
    each and write ``models.md``, ``models.json`` and ``samples.png`` into ``out``; returns
    the report's path. ``settings``: extra ``--set`` lines for every model."""
    from vaelab.comparison_report import write_report

    p = PRESETS[preset]
    slugs, seeds, start = families or list(FAMILIES), seeds or p.seeds, time.perf_counter()
    if unknown := [s for s in slugs if s not in FAMILIES]:
        raise VaelabError(f"unknown family {unknown[0]!r} (known: {', '.join(FAMILIES)})")
    fetch("mnist", cache=cache)
    budget = ", ".join(f"{s} {epochs_of(p, s, epochs)}" for s in slugs)
    print(f"models table: {len(slugs)} families x {seeds} seed(s), epochs: {budget}; NLL with "
          f"k = {p.k} on {p.test_images or 10000:,} test images; {p.samples:,} samples judged "
          f"per model; one-class AUROC on digit(s) {', '.join(p.digits)}")  # fmt: skip
    jd = load_judge(Path(classifier) if classifier else out / "classifier", p, cache, progress,
                    trained_here=classifier is None)  # fmt: skip
    members = {slug: [measure(out, slug, seed, p, epochs, settings, jd, cache, progress)
                      for seed in range(seeds)] for slug in slugs}  # fmt: skip
    real = judged_real(jd, p, cache)
    return write_report(out, preset, p, epochs, members, real, jd, time.perf_counter() - start,
                        settings, cache)  # fmt: skip


def load_judge(run: Path, p: Preset, cache, progress: bool, trained_here: bool) -> Judge:
    """The judge of run folder ``run``, trained there first when ``trained_here``."""
    if trained_here:
        print(f"--- judge: {run}")
        train_group([load_config(CLASSIFIER_CONFIG, list(p.classifier))], [run], cache, progress,
                    "off")  # fmt: skip
    cfg, clf = load_run(run)
    if not clf.can("read") or list(cfg.model.image_shape) != [1, 28, 28]:
        raise VaelabError(f"{run} is not a classifier of 28x28 images (vaelab classifier train)")
    folder = RunFolder(run, writer=False)
    state = folder.read_state()
    ident = int(state["files"][folder.kept_weights(cfg, state)][:15], 16)
    accuracy = kept(run, "table-accuracy", {"judge": ident}, lambda: {"accuracy": evaluate_run(
        run, cache=cache, progress=False, split="test")["accuracy"]})["accuracy"]  # fmt: skip
    train = load_split("mnist", "train50k", cache)
    ref = reference(clf, train, p.reference, torch.Generator().manual_seed(0))
    print(f"judge {run}: test accuracy {100 * accuracy:.2f} %; samples compared with "
          f"{len(ref.images):,} train50k images")  # fmt: skip
    return Judge(run, clf, ref, ident, accuracy)


def measure(out: Path, slug: str, seed: int, p: Preset, epochs: int | None,
            settings: list[str], jd: Judge, cache, progress: bool) -> dict:  # fmt: skip
    """Train (or continue) one member and measure it: its row of the table, for one seed."""
    run = out / slug / f"seed-{seed}"
    print(f"--- {FAMILIES[slug].name}, seed {seed}: {run}")
    cfg = family_config(slug, seed, epochs_of(p, slug, epochs), settings)
    train_group([cfg], [run], cache, progress, "off")
    cfg, model = load_run(run)
    row = {"run": str(run), "parameters": sum(t.numel() for t in model.parameters()),
           "training_seconds": RunFolder(run, writer=False).read_metrics()[-1]["seconds"],
           "conditional": bool(cfg.model.conditional)}  # fmt: skip
    row |= kept(run, "table-likelihood", {"k": p.k, "images": p.test_images},
                lambda: likelihood(run, p, cache, progress))  # fmt: skip
    key = {"judge": jd.ident, "n": p.samples, "reference": len(jd.ref.images), "seed": seed}
    row |= kept(run, "table-judge", key, lambda: judged(run, jd, p.samples, seed, cache))
    row["anomaly"] = {} if cfg.model.conditional else {
        digit: one_class_member(out, slug, seed, digit, p, settings, cache, progress)
        for digit in p.digits}  # fmt: skip
    said = {k: f"{row[k]:.4g}" for k in ("nll", "nll_bound", "frechet", "precision", "recall")
            if row.get(k) is not None}  # fmt: skip
    print(f"{FAMILIES[slug].name}, seed {seed}: " + ", ".join(f"{k} {v}" for k, v in said.items()))
    return row


LIKELIHOOD = ("nll", "nll_stderr", "nll_bound", "elbo", "recon_mse_per_pixel", "seconds")
"""What the table keeps of :func:`~vaelab.eval.likelihood.evaluate_run`'s record."""


def likelihood(run: Path, p: Preset, cache, progress: bool) -> dict:
    """The test record of :func:`evaluate_run` (IS-NLL, the codes' bound, or the MSE alone,
    as the model can): on the test split's first ``p.test_images``, binarised once."""
    record = evaluate_run(run, k=p.k, limit=p.test_images, cache=cache, progress=progress,
                          split="test")  # fmt: skip
    return {key: record.get(key) for key in LIKELIHOOD}


JUDGED = ("frechet", "precision", "recall", "class_entropy", "inception_score",
          "label_accuracy", "nearest_train_distance")  # fmt: skip


def judged(run: Path, jd: Judge, n: int, seed: int, cache) -> dict:
    """The judge's row (:func:`~vaelab.eval.generation.judge`) of ``n`` samples of the run's
    model, drawn with ``seed`` (a conditional model: its labels in turn)."""
    t0 = time.perf_counter()
    _, model = load_generator(run, cache)
    classes = list(getattr(model, "classes", None) or [])
    wanted = [classes[i % len(classes)] for i in range(n)] if classes else None
    images = generate(model, n, wanted, seed)  # (n, C, H, W) uint8 of the decoded means
    row = judge(jd.clf, images, wanted, jd.ref.features, jd.ref.images, jd.ref.radii)
    return {key: row.get(key) for key in JUDGED} | {"seconds": time.perf_counter() - t0}


def judged_real(jd: Judge, p: Preset, cache) -> dict:
    """The judge's row of the first ``p.samples`` test images: the floor of each column."""
    test = load_split("mnist", "test", cache, p.samples)
    labels = [test.classes[int(k)] for k in test.labels]
    row = judge(jd.clf, test.images, labels, jd.ref.features, jd.ref.images, jd.ref.radii)
    return {key: row.get(key) for key in JUDGED}


def one_class_member(out: Path, slug: str, seed: int, digit: str, p: Preset,
                     settings: list[str], cache, progress: bool) -> dict:  # fmt: skip
    """Train (or continue) the family's model of normal digit ``digit`` and score it: the
    kind chosen on valid and each kind's test AUROC."""
    run = out / slug / f"digit-{digit}-seed-{seed}"
    print(f"--- {FAMILIES[slug].name}, normal digit {digit}, seed {seed}: {run}")
    extra = [*settings, f'data.only_classes=["{digit}"]']
    cfg = family_config(slug, seed, p.anomaly_epochs, extra)
    train_group([cfg], [run], cache, progress, "off")
    chosen, valid, test = one_class(run, p.anomaly_k, p.valid_images, p.anomaly_test_images,
                                    cache, progress)  # fmt: skip
    seconds = RunFolder(run, writer=False).read_metrics()[-1]["seconds"]
    return {"chosen": chosen, "valid": valid["auroc"], "test": test["auroc"],
            "auroc": test["auroc"][chosen], "images": test["images"],
            "training_seconds": seconds}  # fmt: skip


def kept(run: Path, stage: str, key: dict[str, int],
         compute: Callable[[], dict[str, float | None]]) -> dict[str, float | None]:  # fmt: skip
    """``compute()``'s numbers, kept as the run's stage file ``stage`` with ``key`` (the
    settings they depend on); read back from it while the key matches and the run has not
    trained further (a new checkpoint drops the stage). None is kept as absent."""
    folder = RunFolder(run)
    try:
        tensors = folder.load_stage(stage, folder.read_state())
    except CheckpointError as e:  # a cache only: a missing or altered file is measured anew
        print(f"vaelab: {e.args[0].split(' (')[0]}: measuring again", file=sys.stderr)
        tensors = None
    if tensors is not None and all(
        f"key.{k}" in tensors and int(tensors[f"key.{k}"]) == v for k, v in key.items()
    ):
        return {k: float(v) for k, v in tensors.items() if not k.startswith("key.")}
    values = compute()
    tensors = {f"key.{k}": torch.tensor(v, dtype=torch.int64) for k, v in key.items()}
    tensors |= {k: torch.tensor(float(v), dtype=torch.float64) for k, v in values.items()
                if v is not None}  # fmt: skip
    folder.save_stage(stage, tensors)
    return {k: float(v) for k, v in values.items() if v is not None}
