"""Training on several processes: torchrun with gloo on the CPU, against one process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vaelab import cli
from vaelab.config import load_config
from vaelab.files import read_tensors
from vaelab.train import train

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)

VAE = """[data]
limit = 600
test_limit = 200
binarize = "dynamic"
[model]
kind = "vae"
widths = [32]
bottleneck = 2
activation = "tanh"
[train]
epochs = 4
batch_size = 50
lr = 1e-3
threads = 1
"""

AE = """[data]
limit = 4000
test_limit = 200
[model]
kind = "ae"
widths = [32]
bottleneck = 4
[train]
epochs = 2
batch_size = 32
lr = 1e-3
optimizer = "sgd"
threads = 1
"""


def torchrun(config, out, cache, *extra, nproc=2, env=None, restarts=0):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", f"--max-restarts={restarts}", "-m", "vaelab",
               "train", str(config), "--out", str(out), "--continue", "--cache", str(cache),
               "--no-progress", *extra]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def weights(run):
    return read_tensors(Path(run) / "model.safetensors")[0]


def metrics(run):
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, mnist_cache):
    root = tmp_path_factory.mktemp("ddp")
    (root / "vae.toml").write_text(VAE)
    (root / "ae.toml").write_text(AE)
    unbroken = torchrun(root / "vae.toml", root / "unbroken", mnist_cache)
    assert unbroken.returncode == 0, unbroken.stderr[-2000:]
    return root, mnist_cache


def test_two_processes_train_an_autoencoder_as_one_does(setup):
    """Same global batch, same data order (one permutation, each rank its share): after
    250 SGD steps the weights agree with one process's up to float rounding. Rounding
    differs because each rank sums its half of the batch and gloo then averages the two
    gradients: 6e-8 here on weights up to 0.74, so 1e-5 leaves room and still fails on any
    real difference (leaving out the world-size factor of the loss gave 0.32). SGD, not
    Adam: Adam's update hardly moves when every gradient is scaled alike."""
    root, cache = setup
    ddp = torchrun(root / "ae.toml", root / "ae2", cache)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    cfg = load_config(root / "ae.toml")
    one = train(cfg, root / "ae1", cache=cache, progress=False, log=lambda s: None)
    a, b = weights(one), weights(root / "ae2")
    assert metrics(root / "ae2")[-1]["step"] == 250
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) > 0  # two processes really ran
    assert [r["test_loss"] for r in metrics(one)] == pytest.approx(
        [r["test_loss"] for r in metrics(root / "ae2")], rel=1e-5
    )


def test_a_vae_on_two_processes_learns_like_one(setup):
    """Per-epoch test losses within 3 standard deviations of three seeds of one process
    (the processes draw their own ε, so the run is another draw, not the same numbers)."""
    root, cache = setup
    single = []
    for seed in (0, 1, 2):
        cfg = load_config(root / "vae.toml", [f"train.seed={seed}"])
        run = train(cfg, root / f"vae-seed{seed}", cache=cache, progress=False, log=lambda s: None)
        single.append([r["test_loss"] for r in metrics(run)])
    spread = torch.tensor(single, dtype=torch.float64)  # (seeds, epochs)
    ddp = torch.tensor([r["test_loss"] for r in metrics(root / "unbroken")], dtype=torch.float64)
    assert ((ddp - spread.mean(0)).abs() <= 3 * spread.std(0)).all(), (ddp, spread)
    assert all("reconstruction" in r["test_terms"] for r in metrics(root / "unbroken"))


SITECUSTOMIZE = """
import os, signal
if os.environ.get("TORCHELASTIC_RESTART_COUNT") == "0" and os.environ.get("RANK") == "1":
    from vaelab.train.optimizers import KernelAdam as Adam  # what train.optimizer = "adam" builds
    real, count = Adam.step, [0]
    def step(self, *args, **kwargs):
        count[0] += 1
        if count[0] == 20:  # epoch 2 of 12 steps each, mid-epoch
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, *args, **kwargs)
    Adam.step = step
"""


def test_a_killed_worker_is_restarted_and_the_run_ends_bit_for_bit(setup, tmp_path):
    root, cache = setup
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    run = root / "killed"
    result = torchrun(root / "vae.toml", run, cache, env=env, restarts=1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming" in result.stdout + result.stderr  # it did die and come back
    a, b = weights(root / "unbroken"), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert metrics(run) == [{**r, "seconds": m["seconds"]} for r, m in
                            zip(metrics(root / "unbroken"), metrics(run), strict=True)]  # fmt: skip


def test_resume_on_two_is_bitwise_and_on_one_continues(setup):
    root, cache = setup
    half = root / "half"
    first = torchrun(root / "vae.toml", half, cache, "--set", "train.epochs=2")
    assert first.returncode == 0, first.stderr[-2000:]
    assert len(json.loads((half / "state.json").read_text())["rng"]["ranks"]["torch"]) == 2
    shutil.copytree(half, root / "half-on-one")
    second = torchrun(root / "vae.toml", half, cache)  # the same command: continues to 4
    assert second.returncode == 0, second.stderr[-2000:]
    a, b = weights(root / "unbroken"), weights(half)
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = []
    one = train(load_config(root / "vae.toml"), resume=root / "half-on-one", cache=cache,
                progress=False, log=lines.append)  # fmt: skip
    assert metrics(one)[-1]["epoch"] == 4
    assert any("written by 2 process(es), this run has 1" in line for line in lines)


def test_refusals_on_several_processes(setup, capsys):
    root, cache = setup
    odd = torchrun(root / "vae.toml", root / "odd", cache, "--set", "train.batch_size=51")
    assert odd.returncode != 0
    assert "train.batch_size = 51 (the global batch) is not divisible by the 2" in odd.stderr
    assert not (root / "odd" / "state.json").exists()
    sweep = torchrun(root / "vae.toml", root / "sweep", cache, "--sweep", "train.lr=1e-3,1e-4")
    assert sweep.returncode != 0 and "--sweep trains its runs one after another" in sweep.stderr
    last = torchrun(root / "ae.toml", root / "last", cache, "--set", "data.limit=641")
    assert last.returncode != 0 and "the last batch of an epoch has 1 of 641 images" in last.stderr
    other = ["train", str(root / "vae.toml"), "--out", str(root / "unbroken"), "--continue",
             "--set", "train.lr=0.01", "--cache", str(cache)]  # fmt: skip
    assert cli.main(other) == 1
    assert "holds a run of another config (train.lr: 0.001 -> 0.01)" in capsys.readouterr().err
    # refused by rank 0 alone: the job ends at once instead of hanging in a collective
    ranks = torchrun(root / "vae.toml", root / "unbroken", cache, "--set", "train.lr=0.01")
    assert ranks.returncode != 0 and "holds a run of another config" in ranks.stderr


def test_a_process_with_an_empty_share_of_a_test_batch(setup):
    """2,049 test images in batches of 2,048: the last one has a single image, which rank 1
    evaluates and rank 0 has none of; the test loss is still the whole split's."""
    root, cache = setup
    extra = ["--set", "data.limit=640", "--set", "data.test_limit=2049", "--set", "train.epochs=1"]
    ddp = torchrun(root / "ae.toml", root / "odd-test", cache, *extra)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    cfg = load_config(root / "ae.toml", [e for e in extra if e != "--set"])
    one = train(cfg, root / "odd-test-1", cache=cache, progress=False, log=lambda s: None)
    assert metrics(root / "odd-test")[-1]["test_loss"] == pytest.approx(
        metrics(one)[-1]["test_loss"], rel=1e-5
    )


def test_nproc_launches_torchrun_from_the_cli(setup, tmp_path, capfd):
    root, cache = setup
    out = tmp_path / "n2"
    args = ["train", str(root / "ae.toml"), "--out", str(out), "--set", "train.epochs=1",
            "--set", "data.limit=640", "--nproc", "2", "--cache", str(cache), "--no-progress"]  # fmt: skip
    assert cli.main(args) == 0
    assert "run folder" in capfd.readouterr().out
    assert metrics(out)[-1]["step"] == 20  # 640 images in global batches of 32
    assert json.loads((out / "state.json").read_text())["rng"]["ranks"]["torch"].__len__() == 2


DISAGREE = """
import os
if os.environ.get("RANK") == "1":
    import vaelab.config
    real = vaelab.config.load_config
    vaelab.config.load_config = lambda path=None, overrides=None: real(path, [*(overrides or []), "train.lr=0.5"])
"""


def test_processes_that_disagree_on_the_config_are_refused(setup, tmp_path):
    root, cache = setup
    (tmp_path / "sitecustomize.py").write_text(DISAGREE)
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    result = torchrun(root / "vae.toml", root / "disagree", cache, env=env)
    assert result.returncode != 0
    assert "the 2 processes disagree on the config: ranks 1 differ from rank 0" in result.stderr
    assert not (root / "disagree" / "state.json").exists()
