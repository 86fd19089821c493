"""``vaelab reproduce thesis|anomaly|models`` and ``vaelab optim demo reddi``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from vaelab.cli.args import Command, _cache_arg, _fuse_arg, positive_int, seed_int
from vaelab.errors import VaelabError


def _reproduce_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", choices=tuple(PRESETS),
                   help="thesis: §2.3, Figures 2.4-2.10; anomaly: one-class MNIST AUROC, a VAE "
                   "per digit (docs/anomaly.md); models: every model family under one budget, "
                   "one table (docs/models-table.md)")  # fmt: skip
    p.add_argument("--preset", choices=("demo", "default", "cpu", "full"),
                   help="thesis: demo (a minute) or default (<= 15 minutes on 2 CPU cores); "
                   "anomaly, models: cpu (default; <= 90 minutes on 2 cores) or full (long)")  # fmt: skip
    p.add_argument("--epochs", type=positive_int, help="epochs per model (overrides the preset)")
    p.add_argument(
        "--full", action="store_true", help="thesis: the thesis's 10,000 epochs per model"
    )
    p.add_argument(
        "--out",
        help="output folder (runs/thesis, runs/anomaly, runs/models; -demo, -full or -<N>ep "
        "added for the other presets, so one never continues another's runs)",
    )
    p.add_argument("--digits", help="anomaly: comma-separated normal digits (all ten)")
    p.add_argument("--families", help="models: comma-separated families (all; "
                   "docs/models-table.md lists them)")  # fmt: skip
    p.add_argument("--seeds", type=positive_int,
                   help="models: seeds per family (the preset's: cpu 1, full 3)")  # fmt: skip
    p.add_argument("--classifier", metavar="RUN_DIR",
                   help="models: the judge (default: trained into OUT/classifier)")  # fmt: skip
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="anomaly, models: a setting for every model (repeatable)")  # fmt: skip
    _fuse_arg(p, "the Adam and AMSGrad models of each bottleneck")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps … (cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _cache_arg(p)


def _thesis(args: argparse.Namespace, preset: str, out: Path) -> None:
    from vaelab.reproduce import reproduce_thesis

    reproduce_thesis(out=out, preset=preset, epochs=args.epochs, cache=args.cache,
                     progress=not args.no_progress, fuse=args.fuse, device=args.device)  # fmt: skip


def _anomaly(args: argparse.Namespace, preset: str, out: Path) -> None:
    from vaelab.oneclass import DIGITS, reproduce_anomaly

    digits = args.digits.split(",") if args.digits else None
    if bad := [d for d in digits or [] if d not in DIGITS]:
        raise VaelabError(f"--digits: {bad[0]!r} is not a digit 0-9")
    reproduce_anomaly(out, preset, args.epochs, digits, args.cache, not args.no_progress,
                      args.set)  # fmt: skip


def _models(args: argparse.Namespace, preset: str, out: Path) -> None:
    from vaelab.comparison import reproduce_models

    families = [f.strip() for f in args.families.split(",")] if args.families else None
    reproduce_models(out, preset, families, args.seeds, args.epochs, args.classifier, args.cache,
                     not args.no_progress, args.set)  # fmt: skip


PRESETS = {"thesis": ("default", "demo", "full"), "anomaly": ("cpu", "full"),
           "models": ("cpu", "full")}  # fmt: skip
"""Each target's presets, its default first."""

RUNNERS: dict[str, Callable[[argparse.Namespace, str, Path], None]] = {
    "thesis": _thesis, "anomaly": _anomaly, "models": _models,
}  # fmt: skip
"""Each target's body: (arguments, preset, output folder)."""

OPTIONS = {"digits": ("anomaly",), "set": ("anomaly", "models"), "families": ("models",),
           "seeds": ("models",), "classifier": ("models",)}  # fmt: skip
"""The options that only some targets take -> those targets."""


def cmd_reproduce(args: argparse.Namespace) -> None:
    default, *others = PRESETS[args.target]
    preset = "full" if args.full else args.preset or default
    if preset not in PRESETS[args.target] or (args.full and args.target != "thesis"):
        raise VaelabError(f"reproduce {args.target}: --preset {'full' if args.full else preset} "
                          f"does not apply (its presets: {', '.join(PRESETS[args.target])})")  # fmt: skip
    for option, targets in OPTIONS.items():
        if getattr(args, option) and args.target not in targets:
            raise VaelabError(f"reproduce {args.target}: --{option} is an option of reproduce "
                              f"{' and '.join(targets)} only")  # fmt: skip
    suffix = f"-{args.epochs}ep" if args.epochs else "" if preset == default else f"-{preset}"
    RUNNERS[args.target](args, preset, Path(args.out or f"runs/{args.target}{suffix}"))


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
    ("reproduce",): (cmd_reproduce, "reproduce the thesis's MNIST experiments, the one-class anomaly benchmark, or the table of every model family", _reproduce_args),
    ("optim", "demo"): (cmd_optim_demo, "Adam vs AMSGrad on Reddi et al.'s problem", _optim_demo_args),
}
# fmt: on
