"""``vaelab reproduce thesis`` and ``vaelab optim demo reddi``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from vaelab.cli.args import Command, _cache_arg, _fuse_arg, positive_int, seed_int


def _reproduce_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", choices=("thesis",), help="thesis: §2.3, Figures 2.4-2.10")
    p.add_argument("--preset", choices=("demo", "default"), default="default",
                   help="demo: a minute; default: <= 15 minutes on 2 CPU cores")  # fmt: skip
    p.add_argument("--epochs", type=positive_int, help="epochs per model (overrides the preset)")
    p.add_argument("--full", action="store_true", help="the thesis's 10,000 epochs per model")
    p.add_argument(
        "--out",
        help="output folder (runs/thesis; runs/thesis-demo, -full or -<N>ep "
        "for the other presets, so one never continues another's runs)",
    )
    _fuse_arg(p, "the Adam and AMSGrad models of each bottleneck")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps … (cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _cache_arg(p)


def cmd_reproduce(args: argparse.Namespace) -> None:
    from vaelab.reproduce import reproduce_thesis

    preset = "full" if args.full else args.preset
    suffix = f"-{args.epochs}ep" if args.epochs else "" if preset == "default" else f"-{preset}"
    reproduce_thesis(out=Path(args.out or f"runs/thesis{suffix}"), preset=preset,
                     epochs=args.epochs, cache=args.cache, progress=not args.no_progress,
                     fuse=args.fuse, device=args.device)  # fmt: skip


def _optim_demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("problem", choices=("reddi",), help="reddi: Reddi et al. 2018, §5")
    p.add_argument("--steps", type=positive_int, help="number of online steps T")
    p.add_argument("--out", default="runs/reddi", help="folder for reddi.png (runs/reddi)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the stochastic variant")


def cmd_optim_demo(args: argparse.Namespace) -> None:
    from vaelab.thesis import reddi

    kwargs = {"out": Path(args.out), "seed": args.seed}
    if args.steps is not None:
        kwargs["steps"] = args.steps
    print(reddi.run_demo(**kwargs))


# fmt: off
COMMANDS: dict[tuple[str, ...], tuple[Command, str, Callable[[argparse.ArgumentParser], None]]] = {
    ("reproduce",): (cmd_reproduce, "reproduce the thesis's MNIST experiments", _reproduce_args),
    ("optim", "demo"): (cmd_optim_demo, "Adam vs AMSGrad on Reddi et al.'s problem", _optim_demo_args),
}
# fmt: on
