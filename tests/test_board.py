"""TensorBoard event files (train.tensorboard): read back with tensorboard's own reader."""

import json
import sys

import pytest
import torch

from helpers import TINY_MNIST
from vaelab import cli
from vaelab.files import read_tensors

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

CONFIG = "configs/mnist_vae.toml"


def _train(out, cache, *extra):
    sets = [a for s in [*TINY_MNIST, "train.epochs=2"] for a in ("--set", s)]
    return cli.main(["train", CONFIG, "--out", str(out), "--cache", str(cache), "--no-progress",
                     *sets, *extra])  # fmt: skip


def _events(run):
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_event_files_hold_every_metric_and_the_weights_are_the_same(mnist_cache, tmp_path):
    run, plain = tmp_path / "board", tmp_path / "plain"
    assert _train(run, mnist_cache, "--tensorboard", "--set", "train.tensorboard_images=1") == 0
    assert _train(plain, mnist_cache) == 0
    acc = _events(run)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e.step for e in acc.Scalars("loss/train")] == [1, 2]
    for tag, key in (("loss/train", "train_loss"), ("loss/test", "test_loss")):
        got = [e.value for e in acc.Scalars(tag)]
        assert got == pytest.approx([r[key] for r in records], rel=1e-6)
    for term, value in records[-1]["test_terms"].items():
        assert acc.Scalars(f"test/{term}")[-1].value == pytest.approx(value, rel=1e-6)
    assert acc.Scalars("lr")[0].value == pytest.approx(1e-3)
    assert {"samples", "reconstructions"} <= set(acc.Tags()["images"])
    assert [e.step for e in acc.Images("samples")] == [1, 2]
    a, b = (read_tensors(d / "model.safetensors")[0] for d in (run, plain))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the images never touch training's streams


def test_a_resumed_run_drops_the_events_after_its_checkpoint(mnist_cache, tmp_path):
    """A run cut off after its epoch-1 checkpoint but with epoch-2 events written (here:
    another run's, copied in) logs epoch 2 once more on resume: each epoch shows once."""
    import shutil

    run, other = tmp_path / "cut", tmp_path / "other"
    sets = [a for s in [*TINY_MNIST, "train.epochs=1"] for a in ("--set", s)]
    assert cli.main(["train", CONFIG, "--out", str(run), "--cache", str(mnist_cache),
                     "--no-progress", "--tensorboard", *sets]) == 0  # fmt: skip
    assert _train(other, mnist_cache, "--tensorboard", "--set", "train.lr=0.01") == 0
    for f in (other / "tensorboard").iterdir():
        shutil.copy(f, run / "tensorboard" / f"{f.name}.0")  # events of epochs 1 and 2
    assert cli.main(["train", "--resume", str(run), "--set", "train.epochs=2", "--cache",
                     str(mnist_cache), "--no-progress"]) == 0  # fmt: skip
    steps = [e.step for e in _events(run).Scalars("loss/train")]
    assert sorted(set(steps)) == [1, 2] and steps.count(2) == 1
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert _events(run).Scalars("loss/train")[-1].value == pytest.approx(
        last["train_loss"], rel=1e-6
    )


def test_missing_tensorboard_is_one_line_and_nothing_is_written(
    mnist_cache, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    run = tmp_path / "none"
    assert _train(run, mnist_cache, "--tensorboard") == 1
    err = capsys.readouterr().err
    assert "pip install 'vaelab[tensorboard]'" in err and "Traceback" not in err
    assert not (run / "metrics.jsonl").exists()
