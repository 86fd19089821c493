"""``vaelab anomaly score``: how unlikely a trained model finds each image of a split, a
folder or an .npz (a CSV row per image, a PNG of the most and least anomalous)."""

from __future__ import annotations

import argparse
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
                   "mse, bce, neg_elbo, nll, latent)")  # fmt: skip
    p.add_argument("--k", type=positive_int, default=1000,
                   help="importance samples of the nll score (1000)")  # fmt: skip
    p.add_argument("--limit", type=non_negative_int, default=0, help="only the first N (0: all)")
    p.add_argument("--batch-size", type=positive_int, default=100, help="images per batch")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the sampled scores (0)")
    p.add_argument("--out", metavar="FILE.csv", help="CSV to write (default RUN_DIR/scores.csv); "
                   "the PNG of the extremes goes beside it")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _cache_arg(p)


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


def cmd_score(args: argparse.Namespace) -> None:
    import numpy as np

    from vaelab.data.batches import heldout_batches
    from vaelab.eval.anomaly import auroc, check_kinds, score_images, score_kinds
    from vaelab.runs.load import load_run

    cfg, model = load_run(args.run)
    kinds = args.kinds.split(",") if args.kinds else score_kinds(model)
    if not kinds:
        raise VaelabError(f"{args.run}: this model has no anomaly score")
    check_kinds(model, kinds)
    out = Path(args.out or Path(args.run) / "scores.csv")
    if out.suffix.lower() != ".csv":
        raise VaelabError(f"--out {out}: writes a CSV, so the name must end in .csv")
    data, names = load_images(args.images, cfg, args.cache)
    data = data.limit(args.limit)
    names = names[: len(data)] if names else None
    batches = heldout_batches(data, cfg.data.binarize, args.batch_size)
    print(f"vaelab: scoring {len(data):,} images of {args.images} ({', '.join(kinds)}) …",
          file=sys.stderr, flush=True)  # fmt: skip
    scores = score_images(model, batches, kinds, k=args.k, seed=args.seed,
                          progress=not args.no_progress)  # fmt: skip
    labels = None if data.labels is None else [data.classes[i] for i in data.labels.tolist()]
    _write_csv(out, kinds, scores, labels, names)
    _write_extremes(out.with_suffix(".png"), data, scores[kinds[-1]], kinds[-1])
    print(f"wrote {out} and {out.with_suffix('.png')}")
    normal = cfg.data.only_classes
    if labels and normal:
        is_normal = np.array([lab in normal for lab in labels])
        if 0 < is_normal.sum() < len(is_normal):
            print(f"AUROC (normal: the run's classes {', '.join(normal)}; the rest anomalous):")
            for kind in kinds:
                value = auroc(scores[kind][is_normal], scores[kind][~is_normal])
                print(f"  {kind:<9} {100 * value:.2f}")


def _write_csv(out: Path, kinds, scores, labels, names) -> None:
    import csv
    import io

    from vaelab.files import atomic_write

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["index", *(["name"] if names else []), *(["label"] if labels else []),
                     *kinds])  # fmt: skip
    for i in range(len(scores[kinds[0]])):
        row = [i, *([names[i]] if names else []), *([labels[i]] if labels else [])]
        writer.writerow(row + [f"{scores[k][i]:.6g}" for k in kinds])
    text = buf.getvalue().encode()
    atomic_write(out, lambda f: f.write(text))


def _write_extremes(path: Path, data, score, kind: str, n: int = 16) -> None:
    """The ``n`` least and most anomalous images by ``kind``, a row each, in one PNG."""
    import torch

    from vaelab.thesis.images import make_grid, save_png

    order = torch.from_numpy(score).argsort()
    n = min(n, len(order))
    pick = torch.cat([order[:n], order[-n:]])  # least, then most anomalous
    save_png(path, make_grid(data.images[pick], nrow=n, padding=1))


# fmt: off
COMMANDS: dict[tuple[str, ...], tuple[Command, str, Callable[[argparse.ArgumentParser], None]]] = {
    ("anomaly", "score"): (cmd_score, "score how anomalous each image is (CSV + PNG of the extremes)", _score_args),
}
# fmt: on
