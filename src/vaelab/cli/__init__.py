"""The ``vaelab`` command line. Each command group is one module holding both its arguments
and its body, and a ``COMMANDS`` table of (command words) -> (function, one-line help,
builder of its arguments); this module joins the tables into one parser. Errors from bad
input print as one line (a traceback only with ``--debug``)."""

from __future__ import annotations

import argparse
import os
import sys

import vaelab
from vaelab.cli import anomaly, data, evaluate, explore, generate, plot, reproduce, train
from vaelab.cli.args import Command
from vaelab.errors import VaelabError

COMMANDS: dict = {**data.COMMANDS, **train.COMMANDS, **plot.COMMANDS, **generate.COMMANDS,
                  **evaluate.COMMANDS, **anomaly.COMMANDS, **reproduce.COMMANDS,
                  **explore.COMMANDS}  # fmt: skip
"""Every command: (words) -> (function, one-line help, builder of its arguments)."""

__all__ = ["COMMANDS", "Command", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vaelab",
        description="Autoencoders and variational autoencoders on images.",
        epilog="Run `vaelab COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"vaelab {vaelab.__version__}")
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
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for commands that relaunch
    keep_freed_memory()
    if not hasattr(args, "func"):
        # no command, or a group without its sub-command: show the help of the deepest group
        getattr(args, "parser", parser).print_help()
        return 2
    return _leave(args, _run(args))


def _leave(args: argparse.Namespace, code: int) -> int:
    """A process of distributed training (``args.hard_exit``) ends here with ``os._exit``:
    gloo's threads could abort the interpreter's own shutdown after the work is done
    ("terminate called without an active exception", seen in about 1 of 5 runs)."""
    if getattr(args, "hard_exit", False):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except (VaelabError, OSError) as e:  # bad input, or a file that cannot be written/read
        if args.debug:
            raise
        rank = os.environ.get("RANK", "0")  # under torchrun every rank may say it
        # one write of the whole line: ranks sharing a pipe never split each other's lines
        sys.stderr.write(f"vaelab: error{f' (rank {rank})' if rank != '0' else ''}: {e}\n")
        sys.stderr.flush()
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


if __name__ == "__main__":
    raise SystemExit(main())
