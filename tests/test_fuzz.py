"""Hypothesis-driven fuzzing of config values and of the command line's argument strings: a
hostile value may be refused, never answered with a traceback (docs/reliability.md)."""

import argparse
import dataclasses
import os
import shutil
import typing
from pathlib import Path
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaelab import cli
from vaelab.config import PARTS, SECTIONS, load_config, validate
from vaelab.errors import VaelabError
from vaelab.train.setup import setup_model

pytestmark = pytest.mark.faults

FIXTURES = Path(__file__).parent / "fixtures"

HOSTILE_TOML = [
    "0", "-1", "1", "3", "2147483648", "9223372036854775807", "-9223372036854775808",
    "1e400", "-1e400", "nan", "inf", "-inf", "0.5", "1e-320", "true", "false", '""', '"x"',
    '"relu"', '"sgd"', '"torch.nn.Module"', '"../../etc/passwd"', '"\\u0000"', '"é"', "[]",
    "[0]", "[-1]", "[1, 2]", "[784, 784]", "[100000]", '["a"]', "[[1]]", "{}", "{a = 1}",
    "1979-05-27", "[1, 1e400]", "[true]",
]  # fmt: skip
"""TOML values a user or an attacker might put in a config (the parser takes all of them)."""


def config_keys() -> list[str]:
    keys = [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)
            if not dataclasses.is_dataclass(typing.get_type_hints(cls)[f.name])]  # fmt: skip
    for table, kinds in PARTS.items():
        for options in kinds.values():
            keys += [f"model.{table}.{f.name}" for f in dataclasses.fields(options)]
    return sorted(set(keys))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(config_keys()), st.sampled_from(HOSTILE_TOML)),
                min_size=1, max_size=4))  # fmt: skip
def test_hostile_config_values_are_refused_in_one_line_or_build(pairs):
    """Every key, hostile values: loading, validating and building the model and optimizer
    either works or raises a VaelabError (one line through the CLI); nothing else."""
    try:
        cfg = load_config(None, [f"{k}={v}" for k, v in pairs])
        validate(cfg)
        cfg.model.image_shape = [1, 28, 28]
        cfg.model.classes = [str(i) for i in range(10)]
        setup_model(cfg, torch.device("cpu"))
    except VaelabError as e:
        assert "\n" not in str(e).strip(), str(e)


def _commands() -> dict[str, tuple[list[str], list[argparse.Action]]]:
    """Each command's words and its arguments, read from the real parser."""
    found: dict[str, tuple[list[str], list[argparse.Action]]] = {}

    def walk(parser: argparse.ArgumentParser, words: list[str]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs and words:
            found[" ".join(words)] = (words, [a for a in parser._actions if a.dest != "help"])
        for sub in subs:
            for name, child in sub.choices.items():
                walk(child, [*words, name])

    walk(cli.build_parser(), [])
    # long work on success (downloads, the thesis's trainings) is not for a fuzzer
    return {k: v for k, v in found.items() if k not in ("data fetch", "reproduce thesis")}


COMMANDS = _commands()

HOSTILE_ARGS = [
    "", "-", "--", "0", "-1", "1", "2", "1e400", "nan", "inf", "-inf", "99999999999999999999",
    "0x10", "1,2", "a b", "é", "../..", "/", "/dev/null", "/proc/self/mem", "/etc/passwd",
    "x.npz", "x.png", "x.jpg", "mnist", "mnist:test", "nosuchset", "train", "test", "valid",
    "model.widths=[]", "train.lr=-1", "train.epochs=0", "a=b", "=", "[", "{", "true",
    str(FIXTURES / "runs" / "ae_tiny"), str(FIXTURES / "runs" / "vae_tiny"),
    str(FIXTURES / "tiny8.npz"), str(FIXTURES / "README.md"), str(FIXTURES),
]  # fmt: skip
"""Values for any argument: numbers out of range, paths to the wrong kind of thing, run
folders and data files that exist."""


@st.composite
def command_lines(draw) -> list[str]:
    words, actions = COMMANDS[draw(st.sampled_from(sorted(COMMANDS)))]
    argv = list(words)
    for action in draw(st.lists(st.sampled_from(actions), max_size=5)):
        value = st.sampled_from(HOSTILE_ARGS)
        if action.option_strings:
            argv.append(draw(st.sampled_from(action.option_strings)))
            if action.nargs != 0:
                argv.append(draw(value))
        else:
            argv.append(draw(value))
    return argv


@settings(max_examples=600, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(argv=command_lines())
def test_hostile_command_lines_never_end_in_a_traceback(argv, tmp_path_factory, capsys):
    """Any command, any of its options, hostile values, an empty cache (nothing trains or
    downloads): exit 0, 1 or 2 (argparse), with at most one 'vaelab: error' line and no
    traceback; the fixtures are worked on in a copy."""
    work = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(FIXTURES, work / "fixtures")
    argv = [a.replace(str(FIXTURES), str(work / "fixtures")) for a in argv]
    cache = ["--cache", str(work / "cache")] if "--cache" not in argv else []
    here = os.getcwd()
    os.chdir(work)  # relative paths among the arguments land in the scratch folder
    try:
        with mock.patch("vaelab.cli.explore.serve", _stop_at_once):
            code = cli.main([*argv, *cache] if _takes_cache(argv) else argv)
    except SystemExit as e:  # argparse: usage error (2) or --help/--version (0)
        code = e.code
    finally:
        os.chdir(here)
    err = capsys.readouterr().err
    assert code in (0, 1, 2), (argv, err)
    assert "Traceback" not in err, (argv, err)
    if code == 1:
        assert sum(line.startswith("vaelab: error") for line in err.splitlines()) == 1, err


def _stop_at_once(server) -> None:
    """`explore` serves until Ctrl-C: fuzzed, it goes as far as listening, then stops."""
    server.server_close()


def _takes_cache(argv: list[str]) -> bool:
    for words, actions in COMMANDS.values():
        if argv[: len(words)] == words:
            return any("--cache" in a.option_strings for a in actions)
    return False
