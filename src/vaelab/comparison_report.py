"""The report of `vaelab reproduce models` (:mod:`vaelab.comparison`): each family's seeds
reduced to mean ± standard deviation, the markdown table ``models.md``, every number in
``models.json`` and ``samples.png``, a row of samples per family."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from vaelab.comparison import BASE, FAMILIES, Judge, Preset, epochs_of
from vaelab.device import machine
from vaelab.files import atomic_write
from vaelab.generate import generate, load_generator
from vaelab.train.loop import hms


def stat(values: list[float | None], fmt: str, scale: float = 1.0) -> str:
    """One value, or mean ± standard deviation (n − 1 in the denominator) over seeds; "–"
    where no seed has one."""
    values = [scale * v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(np.mean(values), fmt)} ± {format(np.std(values, ddof=1), fmt)}"


def _nll(rows: list[dict]) -> str:
    """The IS-NLL (a conditional model's −log p(x | y), marked), the VQ-VAE's bound, or –."""
    if any(r.get("nll") is not None for r in rows):
        cell = stat([r.get("nll") for r in rows], ".2f")
        return cell + " ᶜ" if rows[0]["conditional"] else cell
    if any(r.get("nll_bound") is not None for r in rows):
        return f"≤ {stat([r.get('nll_bound') for r in rows], '.2f')} (bound)"
    return "–"


def _auroc(rows: list[dict]) -> str:
    """Per seed the mean over the normal digits of the test AUROC (%) of the kind chosen on
    valid; the kinds chosen in brackets."""
    if not rows[0]["anomaly"]:
        return "–"
    per_seed = [np.mean([a["auroc"] for a in r["anomaly"].values()]) for r in rows]
    kinds = sorted({a["chosen"] for r in rows for a in r["anomaly"].values()})
    return f"{stat(per_seed, '.1f', 100)} ({', '.join(kinds)})"


@dataclass(frozen=True)
class Column:
    head: str
    cell: Callable[[list[dict]], str]
    """a family's rows, one per seed -> the cell"""
    judged: bool = False
    """a column of the judge's (also shown for the real test images)"""


def _judge_column(head: str, key: str, fmt: str, scale: float = 1.0) -> Column:
    return Column(head, lambda rows: stat([r.get(key) for r in rows], fmt, scale), judged=True)


COLUMNS = [
    Column("parameters", lambda rows: f"{rows[0]['parameters']:,}"),
    Column("training", lambda rows: hms(np.mean([r["training_seconds"] for r in rows]))),
    Column("test NLL (nats)", _nll),
    Column("recon. MSE / pixel", lambda rows: stat([r.get("recon_mse_per_pixel") for r in rows], ".4f")),
    _judge_column("Fréchet ↓", "frechet", ".1f"),
    _judge_column("precision", "precision", ".3f"),
    _judge_column("recall", "recall", ".3f"),
    _judge_column("class entropy", "class_entropy", ".3f"),
    Column("label accuracy (%)", lambda rows: stat([r.get("label_accuracy") for r in rows], ".2f", 100)
           if rows[0]["conditional"] else "–", judged=True),
    _judge_column("nearest-train distance", "nearest_train_distance", ".2f"),
    Column("one-class AUROC (%)", _auroc),
]  # fmt: skip
"""The table's columns after the family's name, in order."""


def write_report(out: Path, preset: str, p: Preset, epochs: int | None,
                 members: dict[str, list[dict]], real: dict, jd: Judge, elapsed: float,
                 settings: list[str] = (), cache=None) -> Path:  # fmt: skip
    """``models.md``, ``models.json`` and ``samples.png`` in ``out``; returns models.md."""
    budget = {slug: epochs_of(p, slug, epochs) for slug in members}
    record = {"preset": preset, "preset_settings": asdict(p), "epochs": budget,
              "base": list(BASE), "extra_settings": list(settings), "machine": machine(),
              "judge": {"run": str(jd.run), "accuracy": jd.accuracy}, "real test": real,
              "families": {slug: {"name": FAMILIES[slug].name, "sets": list(FAMILIES[slug].sets),
                                  "seeds": rows}
                           for slug, rows in members.items()}}  # fmt: skip
    text = json.dumps(record, indent=1, default=float)
    atomic_write(out / "models.json", lambda f: f.write(text.encode()))
    samples_png(out / "samples.png", members, cache)
    lines = _header(preset, p, budget, members, jd, elapsed, settings) + _table(members, real)
    report = atomic_write(out / "models.md", lambda f: f.write("\n".join(lines).encode()))
    print(f"wrote {report}, {out / 'models.json'} and {out / 'samples.png'}")
    return report


def _table(members: dict[str, list[dict]], real: dict) -> list[str]:
    head = ["| family | " + " | ".join(c.head for c in COLUMNS) + " |",
            "|---|" + "---|" * len(COLUMNS)]  # fmt: skip
    rows = [f"| {FAMILIES[slug].name} | " + " | ".join(c.cell(seeds) for c in COLUMNS) + " |"
            for slug, seeds in members.items()]  # fmt: skip
    floor = [{**real, "conditional": True}]
    rows.append("| *real test images* | "
                + " | ".join(c.cell(floor) if c.judged else "" for c in COLUMNS) + " |")  # fmt: skip
    return [*head, *rows, ""]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _header(preset: str, p: Preset, budget: dict[str, int], members: dict[str, list[dict]],
            jd: Judge, elapsed: float, settings: list[str]) -> list[str]:  # fmt: skip
    common = max(set(budget.values()), key=list(budget.values()).count)
    own = [f"{FAMILIES[s].name} {n}" for s, n in budget.items() if n != common]
    seeds = len(next(iter(members.values())))
    compute = sum(r["training_seconds"] + sum(a["training_seconds"] for a in r["anomaly"].values())
                  for rows in members.values() for r in rows)  # fmt: skip
    budget_line = (
        f"Budget: {_plural(common, 'epoch')} on `train50k` for every family"
        + (f" except {', '.join(own)} (an epoch of it costs several VAE epochs)" if own else "")
        + "; dynamically binarised images, batch 128, Adam 1e-3 decaying to 3e-4, MLP "
        "784-512-256 with 16-d codes where the family allows (VQ-VAE: two stride-2 "
        "convolutions to a 7x7 grid of 16-d vectors, 256 entries; two-layer VAE: z₁ 32, "
        "z₂ 16), Bernoulli decoder (`bce_sum` for the autoencoders), fp32; the weights of the "
        f"best epoch on `valid` kept (models.json lists every setting). {_plural(seeds, 'seed')}"
        + (": mean ± standard deviation over seeds." if seeds > 1 else ".")
        + (f" Extra settings: `{' '.join(settings)}`." if settings else "")
    )  # fmt: skip
    return ["# Every model family under one budget", "",
            f"`vaelab reproduce models`, preset {preset}, {time.strftime('%Y-%m-%d')}; {machine()}.",
            "", budget_line, "", _columns_line(p, jd), "",
            f"Compute recorded by the runs (training): {hms(compute)}; this call's wall time: "
            f"{hms(elapsed)}.", ""]  # fmt: skip


def _columns_line(p: Preset, jd: Judge) -> str:
    images = f"the first {p.test_images:,}" if p.test_images else "all 10,000"
    return (
        f"Columns: test NLL = importance-sampled −log p(x), k = {p.k}, on {images} test "
        "images binarised once (ᶜ: a conditional model's −log p(x | y); the VQ-VAE's is its "
        "bound, reconstruction − log p(codes)); – where a family has no density. "
        "Reconstruction MSE per pixel: decoded means against the same images. Judge "
        f"columns: {p.samples:,} samples per model (decoded means; conditional: the labels in "
        f"turn), judged by `{jd.run}` ({100 * jd.accuracy:.2f} % test accuracy) against "
        f"{len(jd.ref.images):,} train50k images: Fréchet distance in its features, "
        "precision and recall (k-NN manifolds, k = 3, Kynkäänniemi et al. 2019), entropy of "
        "its mean prediction (ln 10 = 2.303 is even coverage), label accuracy "
        "(conditional models), mean pixel distance to the nearest training image. One-class "
        f"AUROC: a model of the same family per normal digit ({', '.join(p.digits)}) trained "
        f"{_plural(p.anomaly_epochs, 'epoch')} on its train50k images; the score kind chosen "
        f"on {p.valid_images or 10000:,} valid images, the AUROC of the test split "
        f"({p.anomaly_test_images or 10000:,} images; nll with k = {p.anomaly_k}); – for "
        "a conditional family (it would be handed each image's label)."
    )


@torch.no_grad()
def samples_png(out: Path, members: dict[str, list[dict]], cache=None, n: int = 10) -> Path:
    """A row of ``n`` samples of each family's first seed (a conditional one: 0, 1, …)."""
    from vaelab.viz.figures import rows_figure

    rows = []
    for slug, seeds in members.items():
        _, model = load_generator(seeds[0]["run"], cache)
        classes = list(getattr(model, "classes", None) or [])
        wanted = [classes[i % len(classes)] for i in range(n)] if classes else None
        rows.append((FAMILIES[slug].name, generate(model, n, wanted, seed=0)))
    return rows_figure(rows, "samples of each family (seed 0, temperature 1)", out)
