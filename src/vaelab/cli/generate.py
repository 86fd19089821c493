"""``vaelab sample`` (a grid of new images) and ``vaelab generate`` (N per label to files)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from vaelab.cli.args import Command, _cache_arg, _labels, positive_float, positive_int, seed_int
from vaelab.errors import VaelabError


def _sample_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR", help="a run folder of a VAE (or AE: fitted Gaussian)")
    p.add_argument(
        "--label",
        help="conditional VAE: the label to draw, e.g. 7 or 427 (several, "
        "comma-separated, are cycled)",
    )
    _cache_arg(p)
    p.add_argument("-n", type=positive_int, default=64, help="number of images (64)")
    p.add_argument(
        "--out",
        help="PNG grid to write (RUN_DIR/sample-grid.png; `plot samples` "
        "writes the titled figure samples.png)",
    )
    p.add_argument("--npz", metavar="FILE", help="also write the images as .npz (N, H, W, C)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the prior draws (0)")
    p.add_argument("--temperature", type=positive_float, default=1.0,
                   help="scale of the prior's standard deviation (1; < 1: more typical images)")  # fmt: skip


KNOWN_FORMATS = {".png", ".npz", ".npy", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff",
                 ".webp", ".pdf", ".svg", ".gz", ".idx", ".csv", ".json", ".safetensors"}  # fmt: skip
"""File name endings that name a format: an output path ending in another one than the
file's is refused (other endings are taken as the user's own names)."""


def cmd_sample(args: argparse.Namespace) -> None:
    import numpy as np

    from vaelab.files import atomic_write
    from vaelab.generate import generate, load_generator
    from vaelab.thesis.images import make_grid, save_png

    for flag, path, suffix in (("--out", args.out, ".png"), ("--npz", args.npz, ".npz")):
        other = Path(path or "").suffix.lower()
        if other in KNOWN_FORMATS and other != suffix:  # an .npz of PNG bytes, a .jpg …
            raise VaelabError(f"{flag} {path}: writes a {suffix} file, so the name must end in "
                              f"{suffix}, not {other}")  # fmt: skip
    _, model = load_generator(args.run, cache=args.cache)
    labels = _labels(args.label)  # several: cycled over the n images
    labels = labels and [labels[i % len(labels)] for i in range(args.n)]
    u8 = generate(model, args.n, labels, args.seed, temperature=args.temperature)
    grid = Path(args.out or Path(args.run) / "sample-grid.png")
    new_npz = bool(args.npz) and not Path(args.npz).exists()
    if args.npz:
        hwc = u8.permute(0, 2, 3, 1).numpy()  # (n, C, H, W) -> (n, H, W, C)
        atomic_write(Path(args.npz), lambda f: np.savez_compressed(f, images=hwc))
    ncol = max(1, round((args.n * u8.shape[2] / u8.shape[3]) ** 0.5))
    try:
        save_png(grid, make_grid(u8, nrow=ncol, padding=1))
    except BaseException:  # the two files appear together: a new .npz goes again
        if new_npz:
            Path(args.npz).unlink(missing_ok=True)
        raise
    for path in (args.npz, grid):
        if path:
            print(f"wrote {path}")


def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR", help="a run folder of a (conditional) VAE or AE")
    p.add_argument("--per-label", type=positive_int, default=100, help="images per label (100)")
    p.add_argument("--labels", help="comma-separated labels (default: all the model's classes)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--format", choices=("png", "npz", "idx"), default="png", help="png (folders), npz or idx"
    )
    p.add_argument("--seed", type=seed_int, default=0, help="seed (0)")
    p.add_argument("--temperature", type=positive_float, default=1.0,
                   help="scale of the prior's standard deviation (1; < 1: more typical images)")  # fmt: skip
    _cache_arg(p)


def cmd_generate(args: argparse.Namespace) -> None:
    from vaelab.generate import export, load_generator

    _, model = load_generator(args.run, cache=args.cache)
    out = export(model, args.out, args.per_label, _labels(args.labels), args.format, args.seed,
                 args.temperature)  # fmt: skip
    print(f"wrote {out} ({args.format})")


# fmt: off
COMMANDS: dict[tuple[str, ...], tuple[Command, str, Callable[[argparse.ArgumentParser], None]]] = {
    ("sample",): (cmd_sample, "new images from a VAE's prior", _sample_args),
    ("generate",): (cmd_generate, "write N generated images per label (png/npz/idx)", _generate_args),
}
# fmt: on
