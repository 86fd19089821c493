"""``vaelab plot``: the figures of a run."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from vaelab.cli.args import Command, _cache_arg
from vaelab.errors import VaelabError


def _plot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR",
                   help="a run folder written by `vaelab train` (for architecture also a CONFIG.toml)")  # fmt: skip
    p.add_argument("figure", choices=("latent", "recon", "loss", "samples", "manifold",
                                      "interpolate", "traverse", "architecture"),
                   help="latent scatter, reconstructions per class, loss curves; for VAEs also "
                        "prior samples, the 2-D manifold, interpolations, latent traversals; "
                        "architecture: the network's layers (PNG and SVG)")  # fmt: skip
    p.add_argument("--out", metavar="FILE", help="PNG to write (default RUN_DIR/FIGURE.png)")
    _cache_arg(p)


def cmd_plot(args: argparse.Namespace) -> None:
    from vaelab.viz.figures import FIGURES

    if args.figure == "architecture":
        return _architecture(args)
    if Path(args.run).suffix == ".toml":
        raise VaelabError(f"plot {args.figure} needs a trained run folder; of a config file "
                          "only `plot CONFIG.toml architecture` can be drawn")  # fmt: skip
    out = args.out or Path(args.run) / f"{args.figure}.png"
    path = FIGURES[args.figure]([(Path(args.run).name, args.run)], out, cache=args.cache)
    print(f"wrote {path}")


def _architecture(args: argparse.Namespace) -> None:
    """The diagram of a run's network, or of an untrained config's (on MNIST's 1x28x28
    and ten classes, unless the config says otherwise)."""
    from vaelab.config import load_config
    from vaelab.models.registry import build_model
    from vaelab.runs.folder import RunFolder
    from vaelab.viz.architecture import architecture_figure

    path = Path(args.run)
    if path.suffix == ".toml":
        cfg = load_config(path, [])
        cfg.model.image_shape = cfg.model.image_shape or [1, 28, 28]
        cfg.model.classes = cfg.model.classes or [str(d) for d in range(10)]
        default = path.with_name(f"{path.stem}-architecture.png")
    else:
        cfg = RunFolder(path, writer=False).read_config()
        default = path / "architecture.png"
    out = Path(args.out or default)
    if out.suffix.lower() != ".png":
        raise VaelabError(f"--out {out}: name a .png (the .svg goes beside it)")
    model = build_model(cfg.model, cfg.train.loss).eval()
    title = f"{cfg.model.kind}/{cfg.model.arch}: {path.name}"
    if cfg.model.conditional:
        title += " (conditional: the label's vector joins the image and z)"
    png, svg = architecture_figure(model, cfg.model.image_shape, title, out)
    print(f"wrote {png} and {svg}")


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR", help="a run folder written by `vaelab train`")
    p.add_argument("--out", metavar="FILE.html", help="the HTML file (default RUN_DIR/report.html)")
    _cache_arg(p)


def cmd_report(args: argparse.Namespace) -> None:
    from vaelab.viz.report import write_report

    out = Path(args.out or Path(args.run) / "report.html")
    if out.suffix.lower() not in (".html", ".htm"):
        raise VaelabError(f"--out {out}: writes HTML, so the name must end in .html")
    print(
        f"wrote {write_report(args.run, out, args.cache)} (self-contained: open it in any browser)"
    )


# fmt: off
COMMANDS: dict[tuple[str, ...], tuple[Command, str, Callable[[argparse.ArgumentParser], None]]] = {
    ("report",): (cmd_report, "one self-contained HTML page about a run: curves, evaluations, network, figures, samples", _report_args),
    ("plot",): (cmd_plot, "figures of a run: latent, recon, loss, samples, manifold, interpolate, traverse, architecture", _plot_args),
}
# fmt: on
