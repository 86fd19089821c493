"""``vaelab anomaly score``: how unlikely a trained model finds each image of a split, a
folder or an .npz (a CSV row per image, a PNG of the most and least anomalous)."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

from vaelab.cli.args import Command, _cache_arg, non_negative_int, positive_int, seed_int
from vaelab.errors import VaelabError


def _score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR", help="a run folder written by `vaelab train`")
    p.add_argument("images", metavar="IMAGES",
                   help="DATASET:SPLIT (e.g. mnist:test), an image folder, or an .npz")  # fmt: skip
    p.add_argument("--kinds", help="comma-separated score kinds (default: all the model has: "
                   "mse, bce, relative, neg_elbo, nll, latent)")  # fmt: skip
    p.add_argument("--out", metavar="FILE.csv", help="CSV to write (default RUN_DIR/scores.csv); "
                   "the PNG of the extremes goes beside it")  # fmt: skip
    p.add_argument("--calibrated", action="store_true",
                   help="mark each image anomalous by the thresholds `anomaly calibrate` saved")  # fmt: skip
    p.add_argument("--threshold", type=float, metavar="X",
                   help="mark images whose score (one --kinds K) is above X as anomalous")  # fmt: skip
    _common_args(p)


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k", type=positive_int, default=1000,
                   help="importance samples of the nll score (1000)")  # fmt: skip
    p.add_argument("--limit", type=non_negative_int, default=0, help="only the first N (0: all)")
    p.add_argument("--batch-size", type=positive_int, default=100, help="images per batch")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the sampled scores (0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _cache_arg(p)


def _calibrate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR", help="a run folder written by `vaelab train`")
    p.add_argument("--normal", required=True, metavar="IMAGES",
                   help="held-out normal images: DATASET:SPLIT (e.g. mnist:valid; only the run's "
                   "data.only_classes of it), a folder or an .npz")  # fmt: skip
    p.add_argument("--fpr", type=float, default=0.01,
                   help="the share of normal images to flag (0.01)")  # fmt: skip
    p.add_argument("--kind", help="the score kind (default neg_elbo, else bce)")
    _common_args(p)


def load_images(spec: str, cfg, cache) -> tuple:
    """(data set, names per image or None) for IMAGES: a folder, an .npz, or DATASET:SPLIT;
    images of another shape than the model's are a one-line error."""
    from vaelab.data.batches import load_split
    from vaelab.data.sources import folder_dataset, folder_files, read_npz

    c, h, w = cfg.model.image_shape
    path = Path(spec)
    if path.is_dir():  # resized to the model's size, named by their files
        files, _, _ = folder_files(path)
        names = [str(p.relative_to(path)) for p, _ in files]
        return folder_dataset(path, (h, w), c, path.name), names
    if path.suffix == ".npz" or path.is_file():
        ds = read_npz(path)
    else:
        name, _, split = spec.partition(":")
        if not split:
            raise VaelabError(f"IMAGES {spec!r}: give DATASET:SPLIT, a folder or an .npz")
        return load_split(name, split, cache, 0, cfg.model.image_shape), None
    if tuple(ds.image_shape) != (c, h, w):
        raise VaelabError(f"{spec} holds {'x'.join(map(str, ds.image_shape))} images; the model "
                          f"takes {c}x{h}x{w}")  # fmt: skip
    return ds, None


def _scores(args, cfg, model, kinds: list[str], spec: str, only: list[str] = ()):
    """(data set, file names or None, {kind: scores}) of IMAGES ``spec``, ``only`` those
    classes when given."""
    from vaelab.data.batches import heldout_batches, keep_classes
    from vaelab.eval.anomaly import score_images

    data, names = load_images(spec, cfg, args.cache)
    if only:
        data = keep_classes(data, only)
    data = data.limit(args.limit)
    names = names[: len(data)] if names else None
    print(f"vaelab: scoring {len(data):,} images of {spec} ({', '.join(kinds)}) …",
          file=sys.stderr, flush=True)  # fmt: skip
    batches = heldout_batches(data, cfg.data.binarize, args.batch_size)
    scores = score_images(model, batches, kinds, k=args.k, seed=args.seed,
                          progress=not args.no_progress)  # fmt: skip
    return data, names, scores


def _thresholds(args, run: Path, kinds: list[str]) -> dict[str, float]:
    """The thresholds ``score`` flags with: ``--threshold X`` (one kind), or with
    ``--calibrated`` every calibrated kind among ``kinds`` (from the run's stage files)."""
    from vaelab.runs.folder import RunFolder

    if args.threshold is not None:
        if args.calibrated:
            raise VaelabError("give --calibrated or --threshold, not both")
        if not math.isfinite(args.threshold):
            raise VaelabError(f"--threshold must be a finite number, got {args.threshold}")
        if len(kinds) != 1:
            raise VaelabError("--threshold applies to one score kind: give --kinds K")
        return {kinds[0]: args.threshold}
    if not args.calibrated:
        return {}
    folder = RunFolder(run, writer=False)
    state = folder.read_state()
    found = {}
    for kind in kinds:
        tensors = folder.load_stage(CALIBRATION + kind, state)
        if tensors is not None:
            found[kind] = float(tensors["threshold"])
    if not found:
        raise VaelabError(f"{run} has no calibration for {', '.join(kinds)}: run `vaelab "
                          f"anomaly calibrate {run} --normal DATASET:SPLIT` first")  # fmt: skip
    return found


def cmd_score(args: argparse.Namespace) -> None:
    import numpy as np

    from vaelab.eval.anomaly import auroc, check_kinds, score_kinds
    from vaelab.runs.load import load_run
    from vaelab.viz.anomaly import extremes_figure, roc_figure

    cfg, model = load_run(args.run)
    kinds = args.kinds.split(",") if args.kinds else score_kinds(model)
    if not kinds:
        raise VaelabError(f"{args.run}: this model has no anomaly score")
    check_kinds(model, kinds)
    out = Path(args.out or Path(args.run) / "scores.csv")
    if out.suffix.lower() != ".csv":
        raise VaelabError(f"--out {out}: writes a CSV, so the name must end in .csv")
    thresholds = _thresholds(args, Path(args.run), kinds)
    data, names, scores = _scores(args, cfg, model, kinds, args.images)
    labels = None if data.labels is None else [data.classes[i] for i in data.labels.tolist()]
    flags = {k: scores[k] > t for k, t in thresholds.items()}  # flagged: above the threshold
    _write_csv(out, kinds, scores, labels, names, flags)
    shown = next(iter(flags), None) or ("neg_elbo" if "neg_elbo" in kinds else kinds[0])
    extremes_figure(out.with_suffix(".png"), data.images, scores[shown],
                    f"{args.images}, by {shown}")  # fmt: skip
    print(f"wrote {out} and {out.with_suffix('.png')} (the extremes by {shown})")
    normal = cfg.data.only_classes
    is_normal = np.array([lab in normal for lab in labels]) if labels and normal else None
    for kind, flag in flags.items():
        line = (
            f"{kind}: {int(flag.sum()):,} of {len(flag):,} flagged (score > {thresholds[kind]:.6g})"
        )
        if is_normal is not None and 0 < is_normal.sum() < len(is_normal):
            line += (f"; FPR {flag[is_normal].mean():.4f} on the run's classes, TPR "
                     f"{flag[~is_normal].mean():.4f} on the rest")  # fmt: skip
        print(line)
    if is_normal is not None and 0 < is_normal.sum() < len(is_normal):
        print(f"AUROC (normal: the run's classes {', '.join(normal)}; the rest anomalous):")
        curves = []
        for kind in kinds:
            value = auroc(scores[kind][is_normal], scores[kind][~is_normal])
            print(f"  {kind:<9} {100 * value:.2f}")
            curves.append((f"{kind} ({100 * value:.1f})", scores[kind][is_normal],
                           scores[kind][~is_normal]))  # fmt: skip
        roc = roc_figure(out.with_name(out.stem + "-roc.png"), curves,
                         f"{args.images}: normal {', '.join(normal)}")  # fmt: skip
        print(f"wrote {roc}")


CALIBRATION = "calibration-"
"""Stage files ``stage-calibration-KIND.safetensors``: a threshold per score kind."""


def cmd_calibrate(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from vaelab.eval.anomaly import check_kinds, score_kinds
    from vaelab.runs.folder import RunFolder
    from vaelab.runs.load import load_run, seen_in_training

    if not 0 < args.fpr < 1:
        raise VaelabError(f"--fpr must lie between 0 and 1, got {args.fpr}")
    cfg, model = load_run(args.run)
    kind = args.kind or next((k for k in ("neg_elbo", "bce") if k in score_kinds(model)), "bce")
    check_kinds(model, [kind])
    name, _, split = args.normal.partition(":")
    if name == cfg.data.name and split and seen_in_training(cfg, split, args.cache):
        print(f"vaelab: warning: the run trained on images of {args.normal}; a threshold set "
              "on them flags too few anomalies", file=sys.stderr)  # fmt: skip
    only = cfg.data.only_classes
    _, _, scores = _scores(args, cfg, model, [kind], args.normal, only)
    normal = scores[kind]
    threshold = float(np.quantile(normal, 1 - args.fpr, method="higher"))
    achieved = float((normal > threshold).mean())
    tensors = {"threshold": torch.tensor(threshold, dtype=torch.float64),
               "fpr": torch.tensor(args.fpr), "achieved_fpr": torch.tensor(achieved),
               "images": torch.tensor(len(normal))}  # fmt: skip
    RunFolder(args.run).save_stage(CALIBRATION + kind, tensors)
    which = f" (classes {', '.join(only)})" if only else ""
    print(
        f"{kind}: threshold {threshold:.6g} flags {achieved:.4f} of {len(normal):,} normal "
        f"images of {args.normal}{which} (target FPR {args.fpr}); saved in {args.run}"
    )


def _write_csv(out: Path, kinds, scores, labels, names, flags) -> None:
    import csv
    import io

    from vaelab.files import atomic_write

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["index", *(["name"] if names else []), *(["label"] if labels else []),
                     *kinds, *(f"anomalous_{k}" for k in flags)])  # fmt: skip
    for i in range(len(scores[kinds[0]])):
        row = [i, *([names[i]] if names else []), *([labels[i]] if labels else [])]
        writer.writerow(row + [f"{scores[k][i]:.6g}" for k in kinds]
                        + [int(f[i]) for f in flags.values()])  # fmt: skip
    text = buf.getvalue().encode()
    atomic_write(out, lambda f: f.write(text))


# fmt: off
COMMANDS: dict[tuple[str, ...], tuple[Command, str, Callable[[argparse.ArgumentParser], None]]] = {
    ("anomaly", "score"): (cmd_score, "score how anomalous each image is (CSV + PNG of the extremes)", _score_args),
    ("anomaly", "calibrate"): (cmd_calibrate, "a threshold for a target false-positive rate on normal images", _calibrate_args),
}
# fmt: on
