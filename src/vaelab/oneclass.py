"""`vaelab reproduce anomaly`: the one-class MNIST benchmark (Ruff et al. 2018's protocol).

For each digit d one VAE trains on the ``train50k`` images of d only. Every score kind the
model has (:data:`~vaelab.eval.anomaly.SCORES`) scores ``valid`` (d normal, the other nine
digits anomalous); the kind with the best validation AUROC is chosen for that digit
*before* the test split is scored. Then all 10,000 test images are scored and the AUROC
table is written beside the published rows. Models train one after another; each is an
ordinary run folder (``OUT/digit-d``), and the scores of each split are a hashed stage file
of that run (``stage-scores-SPLIT.safetensors``), so calling the command again continues
where it stopped and a retrained model is scored anew.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaelab.config import load_config
from vaelab.data.batches import heldout_batches, load_split
from vaelab.data.cache import fetch
from vaelab.errors import CheckpointError
from vaelab.eval.anomaly import SCORES, auroc, score_images, score_kinds
from vaelab.files import atomic_write
from vaelab.runs.folder import RunFolder
from vaelab.runs.load import load_run
from vaelab.train.groups import train_group
from vaelab.train.loop import hms

DIGITS = [str(d) for d in range(10)]
DEEP_SVDD = [98.0, 99.7, 91.7, 91.9, 94.9, 88.5, 98.3, 94.6, 93.9, 96.5]
"""Ruff et al. 2018, Table 1 (one-class Deep SVDD), AUROC % per normal digit; mean 94.8."""
OCGAN_MEAN = 97.5
"""Perera et al. 2019 (OCGAN), mean AUROC % under the same protocol."""


@dataclass(frozen=True)
class Preset:
    epochs: int
    """training epochs per digit's model"""
    k: int
    """importance samples of the nll score"""
    valid_images: int
    """images of ``valid`` the score kind is chosen on (0: all 10,000)"""


PRESETS = {
    "cpu": Preset(epochs=30, k=20, valid_images=2000),
    "full": Preset(epochs=200, k=1000, valid_images=0),
    "tiny": Preset(epochs=1, k=4, valid_images=400),  # the tests' (not on the command line)
}

MODEL = [
    'data.split="train50k"', 'data.test_split="valid"', 'data.binarize="none"',
    'model.kind="vae"', 'model.arch="conv"', "model.channels=[32, 64]", "model.widths=[256]",
    "model.bottleneck=16", 'model.activation="relu"', 'model.likelihood="bernoulli"',
    "train.batch_size=64", "train.lr=1e-3", 'train.optimizer="adam"', "train.checkpoint_every=10",
    'train.precision="fp32"',
]  # fmt: skip
"""The settings every digit's model shares: a convolutional VAE on grey values, in fp32 on
every machine (so that the table does not depend on the CPU's bf16 units)."""


def digit_config(digit: str, epochs: int, extra: list[str] = ()):
    """The config of the model of normal digit ``digit``."""
    return load_config(None, [*MODEL, f'data.only_classes=["{digit}"]', f"train.epochs={epochs}",
                              *extra])  # fmt: skip


def reproduce_anomaly(out: Path, preset: str = "cpu", epochs: int | None = None,
                      digits: list[str] | None = None, cache=None, progress: bool = True,
                      settings: list[str] = (), test_images: int = 0) -> Path:  # fmt: skip
    """Train (or continue) the models of ``digits`` (all ten), score ``valid`` and ``test``,
    write ``anomaly.md``, ``auroc.json``, ``roc.png`` and each digit's extremes into
    ``out``; returns the report's path. ``settings`` are extra ``--set`` lines for every
    model; ``test_images`` > 0 scores only the first N test images (for quick checks)."""
    p = PRESETS[preset]
    epochs = epochs or p.epochs
    digits = digits or DIGITS
    fetch("mnist", cache=cache)
    print(f"one-class MNIST: {len(digits)} VAEs, {epochs} epochs each, one after another; score "
          f"kind chosen on {p.valid_images or 10000:,} valid images, nll with k = {p.k}")  # fmt: skip
    rows, tests, start = {}, {}, time.perf_counter()
    for digit in digits:
        run = out / f"digit-{digit}"
        print(f"--- normal digit {digit}: {run}")
        train_group([digit_config(digit, epochs, settings)], [run], cache, progress, "off")
        chosen, valid, test = one_class(run, p.k, p.valid_images, test_images, cache, progress)
        tests[digit] = test
        training = RunFolder(run, writer=False).read_metrics()[-1]["seconds"]
        scoring = sum(valid["seconds"].values()) + sum(test["seconds"].values())
        rows[digit] = {"chosen": chosen, "valid": valid["auroc"], "test": test["auroc"],
                       "seconds": test["seconds"], "images": test["images"],
                       "compute": {"training": training, "scoring": scoring}}  # fmt: skip
        _extremes(run, test, chosen)
        print(f"digit {digit}: chose {chosen} on valid ({100 * valid['auroc'][chosen]:.2f}); "
              f"test AUROC {100 * test['auroc'][chosen]:.2f}")  # fmt: skip
    elapsed = time.perf_counter() - start
    text = json.dumps({"preset": preset, "epochs": epochs, "k": p.k, "digits": rows}, indent=1)
    atomic_write(out / "auroc.json", lambda f: f.write(text.encode()))
    _roc(out, rows, tests)
    report = _report(out, rows, preset, epochs, p, elapsed)
    print(f"wrote {report}, {out / 'auroc.json'} and {out / 'roc.png'}")
    return report


def one_class(run: Path, k: int, valid_images: int, test_images: int, cache,
              progress: bool) -> tuple[str, dict, dict]:  # fmt: skip
    """(chosen kind, valid scores, test scores) of the one-class run ``run`` (trained on
    the images of ``data.only_classes[0]``): every kind scores the first ``valid_images``
    of ``valid`` (0: all), the kind with the best AUROC there is chosen, then the first
    ``test_images`` of ``test`` are scored (:func:`split_scores`)."""
    trained = load_run(run)  # (cfg, model), for both splits
    valid = split_scores(run, trained, "valid", valid_images, k, cache, progress)
    chosen = max(valid["auroc"], key=valid["auroc"].get)  # chosen before test is scored
    return chosen, valid, split_scores(run, trained, "test", test_images, k, cache, progress)


def split_scores(run: Path, trained: tuple, split: str, limit: int, k: int, cache,
                 progress: bool) -> dict:  # fmt: skip
    """Every kind's scores of ``split`` (its first ``limit`` images) by the run's model
    (``trained`` = (cfg, model) of :func:`load_run`), with the images, the AUROC of each kind
    (the run's digit normal) and the seconds each took; kept as the run's stage file
    ``scores-SPLIT`` and read back from it when present."""
    cfg, model = trained
    folder = RunFolder(run)
    stage = f"scores-{split}"
    try:
        kept = folder.load_stage(stage, folder.read_state())
    except CheckpointError as e:  # a cache only: a missing or altered file is scored anew
        print(f"vaelab: {e.args[0].split(' (')[0]}: scoring {split} again", file=sys.stderr)
        kept = None
    data = load_split(cfg.data.name, split, cache, limit, cfg.model.image_shape)
    if kept is None or int(kept["k"]) != k or int(kept["images"]) != len(data):
        kept = {"k": torch.tensor(k), "images": torch.tensor(len(data))}
    if missing := [kind for kind in score_kinds(model) if kind not in kept]:  # new kinds too
        batches = heldout_batches(data, cfg.data.binarize, 500)
        for kind in missing:  # one kind at a time, so that each is timed on its own
            t0 = time.perf_counter()
            kept[kind] = torch.from_numpy(
                score_images(model, batches, [kind], k, 0, progress)[kind]
            )
            kept[f"seconds.{kind}"] = torch.tensor(time.perf_counter() - t0, dtype=torch.float64)
        folder.save_stage(stage, kept)
    normal = data.labels.numpy() == data.classes.index(cfg.data.only_classes[0])
    kinds = [kind for kind in SCORES if kind in kept]  # SCORES order, however the file lists them
    scores = {kind: kept[kind].numpy() for kind in kinds}
    return {"scores": scores, "normal": normal, "images": len(data), "data": data,
            "auroc": {kind: auroc(s[normal], s[~normal]) for kind, s in scores.items()},
            "seconds": {kind: float(kept[f"seconds.{kind}"]) for kind in kinds}}  # fmt: skip


def _extremes(run: Path, test: dict, kind: str) -> None:
    from vaelab.viz.anomaly import extremes_figure

    extremes_figure(run / "extremes.png", test["data"].images, test["scores"][kind],
                    f"{run.name}, test, by {kind}")  # fmt: skip


def _roc(out: Path, rows: dict, tests: dict) -> None:
    from vaelab.viz.anomaly import roc_figure

    curves = []
    for digit, test in tests.items():
        kind = rows[digit]["chosen"]
        s, normal = test["scores"][kind], test["normal"]
        curves.append((f"{digit} ({kind}, {100 * test['auroc'][kind]:.1f})", s[normal], s[~normal]))
    roc_figure(out / "roc.png", curves, "one-class MNIST, test: ROC of each digit's model")


def _report(out: Path, rows: dict, preset: str, epochs: int, p: Preset, elapsed: float) -> Path:
    kinds = list(next(iter(rows.values()))["test"])
    digits = list(rows)

    def cell(digit, kind):
        value = f"{100 * rows[digit]['test'][kind]:.1f}"
        return f"**{value}**" if rows[digit]["chosen"] == kind else value

    def mean(values):
        return f"{np.mean(values):.1f}"

    head = ["| normal digit | " + " | ".join(digits) + " | mean |",
            "|---|" + "---|" * (len(digits) + 1)]  # fmt: skip
    lines = [f"| {kind} | " + " | ".join(cell(d, kind) for d in digits)
             + f" | {mean([100 * rows[d]['test'][kind] for d in digits])} |" for kind in kinds]  # fmt: skip
    chosen = [100 * rows[d]["test"][rows[d]["chosen"]] for d in digits]
    lines.append("| **chosen on valid** | " + " | ".join(f"{v:.1f}" for v in chosen)
                 + f" | **{mean(chosen)}** |")  # fmt: skip
    if digits == DIGITS:
        lines.append("| Deep SVDD (Ruff et al. 2018) | " + " | ".join(map(str, DEEP_SVDD))
                     + f" | {mean(DEEP_SVDD)} |")  # fmt: skip
        lines.append("| OCGAN (Perera et al. 2019) | " + " | " * (len(digits) - 1)
                     + f" | {OCGAN_MEAN} |")  # fmt: skip
    n = rows[digits[0]]["images"]
    per = {kind: [rows[d]["seconds"][kind] * 10000 / n for d in digits] for kind in kinds}
    timing = [f"| {kind} | " + " | ".join(f"{v:.1f}" for v in per[kind])
              + f" | {mean(per[kind])} |" for kind in kinds]  # fmt: skip
    text = "\n".join([
        "# One-class MNIST: AUROC (%) of each digit's VAE",
        "",
        f"Preset {preset}: a convolutional VAE per normal digit (channels 32, 64; dense 256; "
        f"latent 16; Bernoulli decoder on grey values), trained {epochs} epochs on that digit's "
        "train50k images. The score kind of each digit (bold) is chosen by its AUROC on "
        f"{p.valid_images or 10000:,} valid images before test is scored; test: "
        f"{n:,} images, the digit normal and the other nine anomalous; nll with k = {p.k}. "
        f"Compute recorded by the runs (training + scoring, summed over the digits): "
        f"{hms(sum(r['compute']['training'] + r['compute']['scoring'] for r in rows.values()))}"
        f" (training {hms(sum(r['compute']['training'] for r in rows.values()))}); this "
        f"call's wall time: {hms(elapsed)}.",
        "",
        *head, *lines,
        "",
        "Seconds to score 10,000 images with each kind, per model (from the test split):",
        "",
        *head, *timing,
        "",
    ])  # fmt: skip
    return atomic_write(out / "anomaly.md", lambda f: f.write(text.encode()))
