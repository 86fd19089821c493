"""``vaelab train`` (one run, a sweep, or a continued run), ``vaelab classifier train`` and
``vaelab stage`` (the stages fitted after training)."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

from vaelab.cli.args import Command, _cache_arg, _fuse_arg, positive_int
from vaelab.errors import VaelabError


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="TOML config, e.g. configs/mnist_ae.toml")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (TOML syntax), e.g. --set 'model.widths=[512,256]'")  # fmt: skip
    p.add_argument(
        "--out",
        metavar="DIR",
        help="run folder (default runs/<data>-<kind>-<time>; a sweep: runs/sweep-<time>)",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    p.add_argument("--continue", dest="continue_", action="store_true",
                   help="with CONFIG and --out DIR: start the run, or continue it when DIR holds "
                        "an unfinished run of this config (the rule torchrun's restarts use)")  # fmt: skip
    p.add_argument("--nproc", type=positive_int, metavar="N",
                   help="train on N processes of this machine (launches torchrun's agent)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--compile", dest="compile", action="store_true", default=None,
                   help="compile the objective with torch.compile (train.compile = true)")  # fmt: skip
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="run eagerly (train.compile = false)")  # fmt: skip
    p.add_argument("--tensorboard", action="store_true",
                   help="write TensorBoard event files in RUN/tensorboard (train.tensorboard = true)")  # fmt: skip
    p.add_argument("--sweep", action="append", default=[], metavar="SECTION.KEY=V1,V2,...",
                   help="one run per value (per combination, if repeated) in OUT/KEY=VALUE; "
                        "runs differing only in train.optimizer/lr/lr_decay can train fused (--fuse)")  # fmt: skip
    _fuse_arg(p, "sweep runs that differ only in train.optimizer/lr/lr_decay")
    _cache_arg(p)


def cmd_train(args: argparse.Namespace) -> int | None:
    from vaelab.config import load_config
    from vaelab.runs.folder import RunFolder
    from vaelab.train import distributed
    from vaelab.train.loop import train

    d = distributed.from_env()
    if args.continue_ and (args.resume or not args.config or not args.out):
        raise VaelabError("--continue goes with a CONFIG and --out DIR (not --resume)")
    if args.resume:
        if args.config:
            raise VaelabError("give either a CONFIG or --resume RUN_DIR, not both")
        if args.out:
            raise VaelabError("--resume continues RUN_DIR in place; --out cannot go with it")
        cfg = RunFolder(args.resume, writer=False).read_config()
        cfg = _apply_resume_overrides(cfg, args.set)
    elif args.config:
        cfg = load_config(args.config, args.set)
    else:
        raise VaelabError("give a CONFIG file (e.g. configs/mnist_ae.toml) or --resume RUN_DIR")
    if args.nproc and not d.on:  # the command line checked first: nothing starts for a bad one
        if args.sweep:
            raise VaelabError("--sweep trains its runs one after another: give it without --nproc")
        return _launch(args)
    if args.sweep:
        if d.on:
            raise VaelabError(
                "--sweep trains its runs one after another: start it without torchrun"
            )
        return _sweep(args)
    _apply_flags(args, cfg)
    if args.fuse != "auto":
        raise VaelabError("--fuse applies to --sweep only")
    args.hard_exit = d.on  # see vaelab.cli._leave
    distributed.start(d, cfg.train.device)
    ok = False
    try:
        resume = _continue_point(cfg, Path(args.out), d) if args.continue_ else args.resume
        path = train(cfg, out=args.out, resume=resume, cache=args.cache,
                     progress=not args.no_progress, dist=d)  # fmt: skip
        ok = True
    finally:
        distributed.stop(d, ok)
    if d.main:
        print(f"run folder: {path}")
    return None


def _continue_point(cfg, out: Path, d) -> Path | None:
    """The one rule for starting or continuing: ``out`` when it holds a run of ``cfg`` (up
    to the keys that may change on resume), None when it holds none yet; a run of another
    config is refused naming the keys. Rank 0 decides and tells the others."""
    from vaelab.config import FILLED_IN, RESUME_OVERRIDES, differences
    from vaelab.runs.folder import RunFolder
    from vaelab.train.distributed import broadcast_bytes
    from vaelab.train.state import stretched_schedule

    found = b""
    if d.main and RunFolder(out).file("state.json").exists():
        stored = RunFolder(out, writer=False).read_config()
        if changed := differences(stored, cfg, RESUME_OVERRIDES + FILLED_IN):
            raise VaelabError(f"{out} holds a run of another config ({'; '.join(changed)}); "
                              "give the same config, or another --out")  # fmt: skip
        if warning := stretched_schedule(stored, cfg):
            print(f"vaelab: {warning}", file=sys.stderr)
        found = b"1"
    return out if broadcast_bytes(d, found) else None


PROCESSES_PER_CPU = 4
"""--nproc's bound: training processes per CPU of this machine (each holds torch and the data)."""


def _launch(args: argparse.Namespace) -> int:
    """`vaelab train … --nproc N`: the same command on N processes of this machine, under
    torchrun's elastic agent (``python -m torch.distributed.run --standalone``)."""
    import subprocess

    cpus = os.cpu_count() or 1
    if args.nproc > PROCESSES_PER_CPU * cpus:
        raise VaelabError(f"--nproc {args.nproc}: at most {PROCESSES_PER_CPU * cpus} processes on "
                          f"this machine's {cpus} CPUs ({PROCESSES_PER_CPU} per CPU)")  # fmt: skip
    argv, rest = list(args.argv), []
    while argv:
        word = argv.pop(0)
        if word == "--nproc":
            argv.pop(0)
        elif not word.startswith("--nproc="):
            rest.append(word)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={args.nproc}", "-m", "vaelab", *rest]  # fmt: skip
    # the cores shared out (else the agent sets 1 per process and prints a banner)
    threads = str(max(1, (os.cpu_count() or 1) // args.nproc))
    env = {"OMP_NUM_THREADS": threads, **os.environ}
    agent = subprocess.Popen(command, env=env, text=True, errors="replace",
                             stderr=None if args.debug else subprocess.PIPE)  # fmt: skip
    try:
        if not args.debug:
            _relay(agent.stderr)
        return agent.wait()
    except KeyboardInterrupt:  # the agent got the Ctrl-C too: let it stop its workers
        if not args.debug:
            _relay(agent.stderr)
        return agent.wait()


AGENT_LOG = re.compile(r"[DIWE]\d{4} \d\d:\d\d:\d\d\.\d+ \d+ .*torch/distributed/")
"""A log line of torchrun's agent (its workers' errors are one line each already)."""


def _relay(stream) -> None:
    """Pass the processes' error lines through, not the agent's: its log lines and, when a
    worker failed, its ChildFailedError traceback (the worker's own line said why). A
    traceback not from the agent (a worker's crash) is passed on whole."""
    block: list[str] = []
    others: dict[str, str] = {}  # other ranks' error lines, by message: shown if rank 0's differ
    said: set[str] = set()
    for line in _whole_lines(stream):
        if block or line.startswith("Traceback (most recent call last)"):
            block.append(line)
        elif m := RANK_ERROR.match(line):
            others.setdefault(m.group(1), line)
        elif not AGENT_LOG.match(line):
            said.add(line.partition("vaelab: error: ")[2])
            sys.stderr.write(line)
    sys.stderr.writelines(line for msg, line in others.items() if msg not in said)
    if block and not any("torch/distributed/run.py" in line for line in block):
        sys.stderr.writelines(block)


RANK_ERROR = re.compile(r"vaelab: error \(rank \d+\): (.*\n?)")


def _whole_lines(stream):
    """The stream's lines, a line that holds another process's error line in its middle
    (their writes interleaved) split in two."""
    for line in stream:
        at = line.find("vaelab: error", 1)
        while at > 0:
            yield line[:at] + "\n"
            line = line[at:]
            at = line.find("vaelab: error", 1)
        yield line


def _apply_flags(args: argparse.Namespace, cfg) -> None:
    """--compile / --no-compile override train.compile (neither leaves the config's);
    --tensorboard turns train.tensorboard on."""
    if args.compile is not None:
        cfg.train.compile = args.compile
    if getattr(args, "tensorboard", False):
        cfg.train.tensorboard = True


def _sweep(args: argparse.Namespace) -> None:
    """`vaelab train CONFIG --sweep KEY=V1,V2 …`: one run per combination, in OUT/<values>;
    runs that differ only in optimizer, lr or lr_decay can train fused (``--fuse``). Running the command
    again continues unfinished runs and keeps finished ones."""
    from vaelab.config import load_config
    from vaelab.sweep import sweep_overrides
    from vaelab.train.groups import train_group

    if args.resume:
        raise VaelabError("--sweep continues its runs when run again; do not add --resume")
    out = Path(args.out or f"runs/sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    names, cfgs = [], []
    for name, overrides in sweep_overrides(args.sweep):
        cfg = load_config(args.config, [*args.set, *overrides])
        _apply_flags(args, cfg)
        names.append(name)
        cfgs.append(cfg)
    from vaelab.train.loop import TrainingInterrupted

    try:
        paths = train_group(cfgs, [out / n for n in names], args.cache, not args.no_progress,
                            fuse=args.fuse)  # fmt: skip
    except TrainingInterrupted as e:
        if args.out:
            raise
        raise TrainingInterrupted(
            f"{e}, adding --out {out} (without it a new folder starts)"
        ) from e
    for path in paths:
        print(f"run folder: {path}")


def _apply_resume_overrides(cfg, overrides: list[str]):
    """``cfg`` with the ``--set`` overrides of :data:`~vaelab.config.RESUME_OVERRIDES` applied."""
    from vaelab.config import RESUME_OVERRIDES, from_dict, parse_override, to_dict

    raw = to_dict(cfg)
    for text in overrides:
        section, key, value = parse_override(text)
        if raw.get(section, {}).get(key, object()) == value:
            continue  # the run's own value, repeated from the command that started it
        if f"{section}.{key}" not in RESUME_OVERRIDES:
            raise VaelabError(
                f"--set {section}.{key} cannot change on --resume (only "
                f"{', '.join(RESUME_OVERRIDES)} can)"
            )
        raw[section][key] = value
    new = from_dict(raw)
    from vaelab.train.state import stretched_schedule

    if warning := stretched_schedule(cfg, new):
        print(f"vaelab: {warning}", file=sys.stderr)
    if new.train.precision != cfg.train.precision:
        print(f"vaelab: note: train.precision {cfg.train.precision} -> {new.train.precision}: "
              "from here on the run rounds differently, so it no longer equals an unbroken "
              "run bit for bit", file=sys.stderr)  # fmt: skip
    return new


CLASSIFIER_CONFIG = Path(__file__).parents[1] / "classifier.toml"


def _classifier_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="labelled single-digit data set (the preset's: mnist)")
    p.add_argument("--epochs", type=positive_int, help="epochs (the preset's: 8)")
    p.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override"
    )
    p.add_argument(
        "--out", default="runs/classifier", metavar="DIR", help="run folder (runs/classifier)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _cache_arg(p)


def cmd_classifier_train(args: argparse.Namespace) -> None:
    from vaelab.config import load_config
    from vaelab.eval.likelihood import evaluate_run, format_table
    from vaelab.train.loop import train

    shortcuts = [f"data.name={args.data!r}"] * (args.data is not None)
    shortcuts += [f"train.epochs={args.epochs}"] * (args.epochs is not None)
    cfg = load_config(CLASSIFIER_CONFIG, args.set + shortcuts)  # the options win over --set
    path = train(cfg, out=args.out, cache=args.cache, progress=not args.no_progress)
    print(format_table(evaluate_run(path, cache=args.cache, progress=False)))
    print(f"run folder: {path}")


def _stage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR", help="a trained run folder")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="stages to fit (default: every stage the model has)")  # fmt: skip
    p.add_argument("--redo", action="store_true", help="fit them anew even where present")
    p.add_argument("--limit", type=positive_int,
                   help="at most N training images per stage (default: each stage's own)")  # fmt: skip
    _cache_arg(p)


def cmd_stage(args: argparse.Namespace) -> None:
    """Fit a run's stages (an autoencoder's ex-post Gaussian, …) into its folder."""
    from vaelab.models import build_model
    from vaelab.runs import RunFolder, finish_stages

    cfg = RunFolder(args.run, writer=False).read_config()
    if not build_model(cfg.model, cfg.train.loss).stages:
        print(f"{args.run}: a {cfg.model.kind} fits nothing after training (it has no stages)")
        return
    done = finish_stages(args.run, args.cache, print, args.names or None, args.redo, args.limit)
    print(f"{args.run}: fitted {', '.join(done)}" if done else
          f"{args.run}: nothing to fit (its stages are there; --redo fits them anew)")  # fmt: skip


# fmt: off
COMMANDS: dict[tuple[str, ...], tuple[Command, str, Callable[[argparse.ArgumentParser], None]]] = {
    ("train",): (cmd_train, "train a model from a TOML config", _train_args),
    ("stage",): (cmd_stage, "fit what a run's model fits after training (e.g. an AE's Gaussian)", _stage_args),
    ("classifier", "train"): (cmd_classifier_train, "train the CNN that judges generated digits", _classifier_args),
}
# fmt: on
