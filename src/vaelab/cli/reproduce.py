"""``vaelab reproduce thesis`` and ``vaelab optim demo reddi``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from vaelab.cli.args import Command, _cache_arg, _fuse_arg, positive_int, seed_int
from vaelab.errors import VaelabError


def _reproduce_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", choices=("thesis", "anomaly"),
                   help="thesis: §2.3, Figures 2.4-2.10; anomaly: one-class MNIST AUROC, a VAE "
                   "per digit (docs/anomaly.md)")  # fmt: skip
    p.add_argument("--preset", choices=("demo", "default", "cpu", "full"),
                   help="thesis: demo (a minute) or default (<= 15 minutes on 2 CPU cores); "
                   "anomaly: cpu (default, <= 90 minutes on 2 cores) or full")  # fmt: skip
    p.add_argument("--epochs", type=positive_int, help="epochs per model (overrides the preset)")
    p.add_argument(
        "--full", action="store_true", help="thesis: the thesis's 10,000 epochs per model"
    )
    p.add_argument(
        "--out",
        help="output folder (runs/thesis, runs/anomaly; -demo, -full or -<N>ep added for the "
        "other presets, so one never continues another's runs)",
    )
    p.add_argument("--digits", help="anomaly: comma-separated normal digits (all ten)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="anomaly: a setting for every digit's model (repeatable)")  # fmt: skip
    _fuse_arg(p, "the Adam and AMSGrad models of each bottleneck")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps … (cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _cache_arg(p)


PRESETS = {"thesis": ("default", "demo", "full"), "anomaly": ("cpu", "full")}
"""Each target's presets, its default first."""


def cmd_reproduce(args: argparse.Namespace) -> None:
    default, *others = PRESETS[args.target]
    preset = "full" if args.full else args.preset or default
    if preset not in PRESETS[args.target] or (args.full and args.target != "thesis"):
        raise VaelabError(f"reproduce {args.target}: --preset {'full' if args.full else preset} "
                          f"does not apply (its presets: {', '.join(PRESETS[args.target])})")  # fmt: skip
    if args.target == "thesis" and (args.digits or args.set):
        raise VaelabError("reproduce thesis: --digits and --set apply to reproduce anomaly")
    suffix = f"-{args.epochs}ep" if args.epochs else "" if preset == default else f"-{preset}"
    out = Path(args.out or f"runs/{args.target}{suffix}")
    if args.target == "anomaly":
        from vaelab.oneclass import DIGITS, reproduce_anomaly

        digits = args.digits.split(",") if args.digits else None
        if bad := [d for d in digits or [] if d not in DIGITS]:
            raise VaelabError(f"--digits: {bad[0]!r} is not a digit 0-9")
        reproduce_anomaly(out, preset, args.epochs, digits, args.cache,
                          not args.no_progress, args.set)  # fmt: skip
        return
    from vaelab.reproduce import reproduce_thesis

    reproduce_thesis(out=out, preset=preset, epochs=args.epochs, cache=args.cache,
                     progress=not args.no_progress, fuse=args.fuse, device=args.device)  # fmt: skip


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
    ("reproduce",): (cmd_reproduce, "reproduce the thesis's MNIST experiments, or the one-class anomaly benchmark", _reproduce_args),
    ("optim", "demo"): (cmd_optim_demo, "Adam vs AMSGrad on Reddi et al.'s problem", _optim_demo_args),
}
# fmt: on
