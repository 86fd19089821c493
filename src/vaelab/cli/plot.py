"""``vaelab plot``: the figures of a run."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from vaelab.cli.args import Command, _cache_arg


def _plot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR", help="a run folder written by `vaelab train`")
    p.add_argument("figure", choices=("latent", "recon", "loss", "samples", "manifold",
                                      "interpolate", "traverse"),
                   help="latent scatter, reconstructions per class, loss curves; for VAEs also "
                        "prior samples, the 2-D manifold, interpolations, latent traversals")  # fmt: skip
    p.add_argument("--out", metavar="FILE", help="PNG to write (default RUN_DIR/FIGURE.png)")
    _cache_arg(p)


def cmd_plot(args: argparse.Namespace) -> None:
    from vaelab.viz.figures import FIGURES

    out = args.out or Path(args.run) / f"{args.figure}.png"
    path = FIGURES[args.figure]([(Path(args.run).name, args.run)], out, cache=args.cache)
    print(f"wrote {path}")


# fmt: off
COMMANDS: dict[tuple[str, ...], tuple[Command, str, Callable[[argparse.ArgumentParser], None]]] = {
    ("plot",): (cmd_plot, "figures of a run: latent, recon, loss, samples, manifold, interpolate, traverse", _plot_args),
}
# fmt: on
