"""``vaelab eval``: a run's test record (likelihood, reconstruction or accuracy), or with
``--generation`` the classifier's judgement of its samples."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from vaelab.cli.args import (
    Command,
    _cache_arg,
    _floats,
    _labels,
    non_negative_int,
    positive_int,
    seed_int,
)
from vaelab.errors import VaelabError


def _eval_args(p: argparse.ArgumentParser) -> None:
    d = EVAL_DEFAULTS  # the mode-specific options default to None (given or not)
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
    p.add_argument("--split",
                   help="evaluate on this split of the run's data set (default: its test split; "
                   "choose models on 'valid', report on 'test')")  # fmt: skip
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


def cmd_eval(args: argparse.Namespace) -> None:
    from vaelab.eval.likelihood import append_json, evaluate_run, format_table

    # options of the other mode are refused, not silently ignored: they default to None
    other = LIKELIHOOD_ONLY if args.generation else GENERATION_ONLY
    if stray := [flag for dest, flag in other.items() if getattr(args, dest) is not None]:
        mode = "the likelihood evaluation" if args.generation else "--generation"
        raise VaelabError(f"{', '.join(stray)} applies to {mode} only")
    sampling = [flag for dest, flag in (("k", "--k"), ("max_rows", "--max-rows"))
                if getattr(args, dest) is not None]  # fmt: skip
    for dest, value in EVAL_DEFAULTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)
    if args.generation:
        from vaelab.eval.generation import generation_metrics, metrics_table

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

    from vaelab.models.registry import build_model
    from vaelab.runs.folder import RunFolder
    from vaelab.runs.load import seen_in_training

    which = f"the first {args.limit:,}" if args.limit else "all"
    cfg = RunFolder(args.run, writer=False).read_config()
    split = args.split or cfg.data.test_split
    if args.split and seen_in_training(cfg, split, args.cache):
        print(f"vaelab: warning: the run trained on images of split {split!r} "
              f"({cfg.data.name}:{cfg.data.split}); its numbers there are not held-out ones",
              file=sys.stderr)  # fmt: skip
    sampled = build_model(cfg.model, cfg.train.loss).can("log_weights")
    if sampling and not sampled:  # an option that would be silently ignored
        raise VaelabError(f"{', '.join(sampling)} sets the importance sampling of a likelihood; "
                          f"model.kind = {cfg.model.kind!r} has none (its evaluation is deterministic)")  # fmt: skip
    sampled = f" with k = {args.k:,} importance samples per image" if sampled else ""
    print(f"vaelab: evaluating {args.run} on {which} {split} images{sampled} …",
          file=sys.stderr, flush=True)  # fmt: skip
    result = evaluate_run(args.run, k=args.k, limit=args.limit, seed=args.seed,
                          batch_size=args.batch_size, cache=args.cache,
                          progress=not args.no_progress, device=args.device,
                          max_rows=args.max_rows, split=args.split)  # fmt: skip
    print(format_table(result))
    print(f"appended to {Path(args.run) / 'eval.json'}")


GENERATION_ONLY = {"n": "-n", "labels": "--labels", "temperatures": "--temperatures",
                   "classifier": "--classifier"}  # fmt: skip


LIKELIHOOD_ONLY = {
    "k": "--k",
    "limit": "--limit",
    "split": "--split",
    "batch_size": "--batch-size",
    "device": "--device",
    "max_rows": "--max-rows",
}


EVAL_DEFAULTS = {"n": 2000, "temperatures": "1", "k": 5000, "limit": 0, "batch_size": 100,
                 "device": "cpu"}  # fmt: skip


# fmt: off
COMMANDS: dict[tuple[str, ...], tuple[Command, str, Callable[[argparse.ArgumentParser], None]]] = {
    ("eval",): (cmd_eval, "test ELBO, NLL (importance sampled), MSE, active units", _eval_args),
}
# fmt: on
