"""Generating new labelled data and judging it.

- :func:`load_generator`: any run folder as a generator (a VAE samples its prior; an
  autoencoder samples a Gaussian fitted to the codes of its training images).
- :func:`export`: N images per label written as PNG folders, ``.npz`` or IDX files that
  ``vaelab data import-*`` reads back.
- :func:`generation_metrics`: a trained classifier as the judge — generated-label accuracy,
  Fréchet distance in its penultimate features, entropy of predicted classes, a
  classifier-based Inception score, and the distance to the nearest training image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vaelab.data import atomic_write, heldout_batches, load_split
from vaelab.errors import VaelabError
from vaelab.images import normalize, quantize, save_png
from vaelab.models import Autoencoder, Classifier, digitwise
from vaelab.runs import load_run
from vaelab.sources import write_idx


def load_generator(run_dir: str | Path, cache=None, fit_images: int = 20000):
    """(config, model) of a run, ready to ``sample``; an autoencoder first fits its latent
    Gaussian to (up to ``fit_images``) training images."""
    cfg, model = load_run(run_dir)
    if not hasattr(model, "sample"):
        raise VaelabError(f"{run_dir} holds a {cfg.model.kind}, which cannot generate images")
    if isinstance(model, Autoencoder):
        train = load_split(cfg.data.name, cfg.data.split, cache, fit_images, cfg.model.image_shape)
        # the codes of what it trained on: binarised images if it trained on those
        batches = heldout_batches(train, cfg.data.binarize, batch_size=len(train))
        model.fit_prior(next(iter(batches))[0])
    return cfg, model


@torch.no_grad()
def generate(
    model,
    n: int,
    labels: list[str] | None = None,
    seed: int = 0,
    batch: int = 1000,
    temperature: float = 1.0,
) -> torch.Tensor:
    """``n`` generated images (n, C, H, W) as uint8 (Lemma 1.3.6), in batches; ``labels``:
    one for all or one per image; ``temperature`` scales the prior's standard deviation
    (1 = the model's prior)."""
    if n < 1:
        raise VaelabError(f"cannot generate {n} images")
    if labels is not None and len(labels) not in (1, n):
        raise VaelabError(f"{len(labels)} labels for {n} images: give one, or one per image")
    g = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch):
        m = min(batch, n - start)
        names = (
            None
            if labels is None
            else (labels * m if len(labels) == 1 else labels[start : start + m])
        )
        out.append(quantize(model.sample(m, names, generator=g, temperature=temperature).cpu()))
    return torch.cat(out)


FORMATS = ("png", "npz", "idx")


def _check_names(names: list[str], fmt: str) -> None:
    """Class names come from a data set's files: as png folder names they must not be paths
    (``..``, ``a/b``), and classes.txt (idx) holds one name per line."""
    if fmt == "png":
        bad = [nm for nm in names if nm in (".", "..") or any(ch in nm for ch in "/\\\0")]
        if bad:
            raise VaelabError(f"class names {bad} cannot be folder names (use --format npz)")
    if fmt == "idx" and any("\n" in nm or "\r" in nm for nm in names):
        raise VaelabError("classes.txt holds one name per line: a class name with a line break "
                          "cannot be written (use --format npz)")  # fmt: skip


def export(
    model,
    out: str | Path,
    per_label: int,
    labels: list[str] | None,
    fmt: str = "png",
    seed: int = 0,
    temperature: float = 1.0,
) -> Path:
    """Write ``per_label`` images for each label (all of the model's classes when ``labels``
    is None; unconditional models: ``per_label`` unlabelled images) to ``out``.

    png: ``out/<label>/<i>.png`` (an image folder for ``vaelab data import-folder``);
    npz: ``out/generated.npz`` with images (N, H, W, C), labels and classes;
    idx: ``out/images-idx3-ubyte.gz`` and ``out/labels-idx1-ubyte.gz`` (labels index
    ``out/classes.txt``)."""
    if fmt not in FORMATS:
        raise VaelabError(f"--format must be one of {', '.join(FORMATS)}")
    out = Path(out)
    conditional = bool(getattr(model, "classes", None))
    names = (labels or list(model.classes)) if conditional else [""]
    if labels and not conditional:
        raise VaelabError("--labels need a conditional model")
    _check_names(names, fmt)
    if out.exists() and any(out.iterdir()):  # old images would mix with the new ones
        raise VaelabError(f"{out} is not empty; export into a new folder")
    # one stream for all labels: per-label seeds seed + i would give label i+1 of one export
    # the draws of label i of the export with the next seed
    wanted = [nm for nm in names for _ in range(per_label)] if conditional else None
    images = generate(model, per_label * len(names), wanted, seed, temperature=temperature)
    y = np.repeat(np.arange(len(names)), per_label)
    out.mkdir(parents=True, exist_ok=True)
    hwc = images.permute(0, 2, 3, 1).numpy()  # (N, C, H, W) -> (N, H, W, C)
    if fmt == "png":
        pairs = tqdm(zip(hwc, y, strict=True), total=len(y), desc="writing PNGs", unit="img",
                     leave=False, disable=None if len(y) > 2000 else True)  # fmt: skip
        for i, (img, k) in enumerate(pairs):
            save_png(out / (names[k] or "unlabelled") / f"{i:06d}.png", img)
    elif fmt == "npz":
        arrays = {"images": hwc}
        if conditional:
            arrays |= {"labels": y, "classes": np.array(names)}
        atomic_write(out / "generated.npz", lambda f: np.savez_compressed(f, **arrays))
    else:
        write_idx(out / "images-idx3-ubyte.gz", hwc[..., 0] if hwc.shape[-1] == 1 else hwc)
        if conditional:
            write_idx(
                out / "labels-idx1-ubyte.gz", y.astype(np.uint8 if len(names) <= 256 else np.int32)
            )
            text = ("\n".join(names) + "\n").encode()
            atomic_write(out / "classes.txt", lambda f: f.write(text))
    return out


# --------------------------------------------------------------------------------------
# Judging generated images with a classifier
# --------------------------------------------------------------------------------------


@torch.no_grad()
def _features_and_probs(clf: Classifier, x: torch.Tensor, batch: int = 2000):
    """Penultimate features (N, F) and class probabilities (N, K) of single-slot images."""
    feats, probs = [], []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        f = clf.features(xb)
        feats.append(f.double())
        probs.append(torch.softmax(clf.head(f), 1).double())
    return torch.cat(feats), torch.cat(probs)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2}) between Gaussians fitted to
    feature sets a (N, F) and b (M, F) (the FID formula)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    f = a.shape[1]  # torch.cov of one feature is 0-d: keep (F, F)
    cov_a, cov_b = torch.cov(a.T).reshape(f, f), torch.cov(b.T).reshape(f, f)
    # Tr (Σ_a Σ_b)^{1/2} = Σ sqrt(eig(Σ_a Σ_b)); the eigenvalues are real and >= 0
    eig = torch.linalg.eigvals(cov_a @ cov_b).real.clamp(min=0)
    return float(
        (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * eig.sqrt().sum()
    )


@torch.no_grad()
def nearest_distance(x: torch.Tensor, reference: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Euclidean distance (N,) from each image of x to its nearest image in ``reference``
    (pixels in [0, 1]): small values mean copies of the training data."""
    ref = reference.flatten(1)  # (M, D)
    ref_sq = ref.square().sum(1)
    out = []
    for i in range(0, len(x), batch):
        q = x[i : i + batch].flatten(1)  # (b, D)
        d2 = q.square().sum(1, keepdim=True) - 2 * q @ ref.T + ref_sq  # (b, M)
        out.append(d2.min(1).values.clamp(min=0).sqrt())
    return torch.cat(out)


def judge(
    clf: Classifier,
    images: torch.Tensor,
    labels: list[str] | None,
    real_features: torch.Tensor,
    train_images: torch.Tensor,
) -> dict[str, Any]:
    """Metrics of a set of images (N, C, H, W) uint8, optionally meant to show ``labels``."""
    x = normalize(images)
    feats, probs = _features_and_probs(clf, clf.slots(x))
    pred = probs.argmax(1).reshape(len(x), -1)  # (N, S) digit per slot
    read = ["".join(clf.classes[int(k)] for k in row) for row in pred]
    p_y = probs.mean(0)
    row: dict[str, Any] = {
        "n": len(x),
        "frechet": frechet_distance(feats, real_features),
        "class_entropy": float(-(p_y * p_y.clamp_min(1e-12).log()).sum()),
        "inception_score": float(
            torch.exp(
                (probs * (probs.clamp_min(1e-12).log() - p_y.clamp_min(1e-12).log())).sum(1).mean()
            )
        ),
        "nearest_train_distance": float(nearest_distance(x, train_images).mean()),
    }
    if labels is not None:
        pairs = list(zip(read, labels, strict=True))
        row["label_accuracy"] = float(np.mean([r == t for r, t in pairs]))
        # digit by digit only where names are digit strings read slot by slot ("cat" read as
        # "bird" has no digits to compare)
        if digitwise(clf.classes) and all(len(r) == len(t) for r, t in pairs):
            hits = [a == b for r, t in pairs for a, b in zip(r, t, strict=True)]
            row["digit_accuracy"] = float(np.mean(hits))
    return row


def generation_metrics(
    run_dir: str | Path,
    classifier_dir: str | Path,
    n: int = 2000,
    seed: int = 0,
    labels: list[str] | None = None,
    cache=None,
    temperatures: tuple[float, ...] = (1.0,),
) -> dict[str, dict[str, Any]]:
    """Rows ``real test`` and one per sampling temperature of :func:`judge` for a run,
    judged by a classifier run. A conditional model generates for ``labels`` (default: its
    classes, cycled) and is scored on reading them back; the real row uses the test split's
    own labels."""
    cfg, model = load_generator(run_dir, cache)
    _, clf = load_run(classifier_dir)
    if not isinstance(clf, Classifier):
        raise VaelabError(f"{classifier_dir} is not a classifier run (vaelab classifier train)")
    test = load_split(cfg.data.name, cfg.data.test_split, cache, 0, cfg.model.image_shape)
    train = load_split(cfg.data.name, cfg.data.split, cache, 0, cfg.model.image_shape)
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(test), generator=g)[:n]
    real = test.subset(pick)
    train_ref = normalize(train.images[torch.randperm(len(train), generator=g)[:10000]])
    # reference features: real training images, so "real test" gives the floor
    ref_feats, _ = _features_and_probs(clf, clf.slots(train_ref))
    real_labels = [test.classes[int(k)] for k in real.labels] if real.labels is not None else None
    rows = {"real test": judge(clf, real.images, real_labels, ref_feats, train_ref)}
    conditional = bool(getattr(model, "classes", None))
    wanted = None
    if conditional:
        names = labels or list(model.classes)
        wanted = [names[i % len(names)] for i in range(n)]
    name = cfg.model.kind + ("+gaussian" if cfg.model.kind == "ae" else "")
    name += " (conditional)" if conditional else ""
    for t in temperatures:
        images = generate(model, n, wanted, seed, temperature=t)
        rows[name + ("" if t == 1.0 else f", T={t:g}")] = judge(
            clf, images, wanted, ref_feats, train_ref
        )
    return rows


def metrics_table(rows: dict[str, dict[str, Any]]) -> str:
    """A text table, one row per image source."""
    keys = ["n", "label_accuracy", "digit_accuracy", "frechet", "class_entropy",
            "inception_score", "nearest_train_distance"]  # fmt: skip
    head = f"{'source':<22}" + "".join(f"{k:>24}" for k in keys)
    lines = [head]
    for name, row in rows.items():
        cells = [row.get(k) for k in keys]
        shown = [
            "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v)) for v in cells
        ]
        lines.append(f"{name:<22}" + "".join(f"{v:>24}" for v in shown))
    return "\n".join(lines)
