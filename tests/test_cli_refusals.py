"""Inputs that were silently accepted or ended in a traceback, now one clear line each."""

from __future__ import annotations

import json

import pytest

from vaelab import cli
from vaelab.config import load_config
from vaelab.errors import DataError
from vaelab.train import train


@pytest.fixture(scope="module")
def ae_run(mnist_cache, tmp_path_factory):
    cfg = load_config(None, ["model.widths=[16]", "data.limit=200", "data.test_limit=40",
                             "train.epochs=1"])  # fmt: skip
    out = tmp_path_factory.mktemp("refusals") / "ae"
    return train(cfg, out, cache=mnist_cache, progress=False, log=lambda s: None)


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("vaelab 0.")


def test_state_records_what_wrote_it(ae_run):
    import torch

    written = json.loads((ae_run / "state.json").read_text())["written_by"]
    assert written == {"vaelab": __import__("vaelab").__version__, "torch": torch.__version__,
                       "device": "cpu"}  # fmt: skip


@pytest.mark.parametrize("digits", [0, 7, 99])
def test_compose_digits_out_of_range_before_any_allocation(digits):
    from vaelab.data.compose import default_holdout

    with pytest.raises(DataError, match=f"--digits must be between 1 and 6, got {digits}"):
        default_holdout(digits, seed=0)


def test_compose_cli_digits_99_is_one_line(capsys, tmp_path):
    args = ["data", "compose", "--digits", "99", "--name", "x", "--cache", str(tmp_path)]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--digits must be between 1 and 6, got 99" in err


@pytest.mark.parametrize(("flag", "name", "suffix"), [("--out", "x.npz", ".png"),
                                                      ("--out", "x.jpg", ".png"),
                                                      ("--npz", "x.png", ".npz")])  # fmt: skip
def test_sample_outputs_follow_their_extension(
    ae_run, mnist_cache, tmp_path, capsys, flag, name, suffix
):
    path = tmp_path / name
    assert cli.main(["sample", str(ae_run), flag, str(path), "--cache", str(mnist_cache)]) == 1
    assert f"must end in {suffix}" in capsys.readouterr().err and not path.exists()


def test_eval_of_a_model_without_likelihood_refuses_k(ae_run, mnist_cache, capsys):
    assert cli.main(["eval", str(ae_run), "--k", "50", "--cache", str(mnist_cache)]) == 1
    assert (
        "--k sets the importance sampling of a likelihood; model.kind = 'ae' has none"
        in capsys.readouterr().err
    )
    assert cli.main(["eval", str(ae_run), "--cache", str(mnist_cache), "--no-progress"]) == 0
