"""End-to-end training on real MNIST subsets: the CLI, resume, checkpoints, refusals."""

import json
import pickle
from pathlib import Path

import pytest
import torch

from vaelab import cli, runs, train
from vaelab.config import load_config
from vaelab.errors import CheckpointError

TINY = ["data.limit=1000", "data.test_limit=200", "model.widths=[64,32]", "train.batch_size=100"]


def tiny(*extra):
    return load_config(None, TINY + list(extra))


def weights(run_dir):
    return runs.read_tensors(run_dir / "model.safetensors")[0]


def test_cli_train_loss_falls(mnist_cache, tmp_path, capsys):
    out = tmp_path / "run"
    config = str(Path(__file__).parents[1] / "configs" / "mnist_ae.toml")
    args = ["train", config, "--out", str(out), "--cache", str(mnist_cache), "--no-progress"]
    args += [a for s in TINY + ["train.epochs=4", "train.lr=1e-3"] for a in ("--set", s)]
    assert cli.main(args) == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]
    assert metrics[-1]["train_loss"] < 0.8 * metrics[0]["train_loss"]
    assert metrics[-1]["test_loss"] < metrics[0]["test_loss"]
    for name in ("config.toml", "model.safetensors", "optimizer.safetensors", "state.json"):
        assert (out / name).exists()
    assert "epoch    4/4" in capsys.readouterr().out


@pytest.mark.parametrize("optimizer", ["adam", "amsgrad"])
def test_resume_is_bitwise(mnist_cache, tmp_path, optimizer):
    straight = train.train(tiny("train.epochs=4", f"train.optimizer={optimizer}"),
                           tmp_path / "a", cache=mnist_cache, progress=False, log=lambda s: None)  # fmt: skip
    half = train.train(tiny("train.epochs=2", f"train.optimizer={optimizer}"),
                       tmp_path / "b", cache=mnist_cache, progress=False, log=lambda s: None)  # fmt: skip
    cli.main(["train", "--resume", str(half), "--set", "train.epochs=4", "--cache",
              str(mnist_cache), "--no-progress"])  # fmt: skip
    a, b = weights(straight), weights(half)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    la = runs.RunFolder(straight).read_metrics()
    lb = runs.RunFolder(half).read_metrics()
    assert [m["train_loss"] for m in la] == [m["train_loss"] for m in lb]


def test_interrupt_mid_epoch_saves_and_resumes_exactly(mnist_cache, tmp_path, monkeypatch):
    cfg = tiny("train.epochs=2")
    straight = train.train(
        cfg, tmp_path / "a", cache=mnist_cache, progress=False, log=lambda s: None
    )

    from vaelab.data import Batches

    real_epoch = Batches.epoch
    calls = {"n": 0}

    def interrupting(self, skip=0):
        for item in real_epoch(self, skip):
            calls["n"] += 1
            if calls["n"] == 13:  # 10 train batches + 1 test batch per epoch: epoch 2, batch 2
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(Batches, "epoch", interrupting)
    with pytest.raises(train.TrainingInterrupted, match="--resume"):
        train.train(tiny("train.epochs=2"), tmp_path / "b", cache=mnist_cache, progress=False,
                    log=lambda s: None)  # fmt: skip
    state = runs.RunFolder(tmp_path / "b").read_state()
    assert (state["epoch"], state["batch"]) == (1, 1)
    monkeypatch.setattr(Batches, "epoch", real_epoch)
    train.train(tiny("train.epochs=2"), resume=tmp_path / "b", cache=mnist_cache, progress=False,
                log=lambda s: None)  # fmt: skip
    a, b = weights(straight), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_stops_and_keeps_last_good_checkpoint(mnist_cache, tmp_path, monkeypatch):
    from vaelab.models import Autoencoder

    real = Autoencoder.objective
    steps = {"n": 0}

    def poisoned(self, x, y=None):
        steps["n"] += 1
        out = real(self, x, y)
        return out * float("nan") if steps["n"] == 15 else out

    monkeypatch.setattr(Autoencoder, "objective", poisoned)
    # calls 1-10 train epoch 1, call 11 is its test loss, so call 15 is step 14
    with pytest.raises(train.TrainingDiverged, match=r"epoch 2, step 14.*epoch 1"):
        train.train(tiny("train.epochs=3"), tmp_path / "r", cache=mnist_cache, progress=False,
                    log=lambda s: None)  # fmt: skip
    assert runs.RunFolder(tmp_path / "r").read_state()["epoch"] == 1
    cfg, model = runs.load_run(tmp_path / "r")  # the kept checkpoint loads
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_early_stopping(mnist_cache, tmp_path):
    # lr 0 never improves the test loss: stops after 1 + patience epochs
    run = train.train(tiny("train.epochs=10", "train.lr=0.0", "train.early_stopping=2",
                           "train.optimizer=sgd"), tmp_path / "r", cache=mnist_cache,
                      progress=False, log=lambda s: None)  # fmt: skip
    assert len(runs.RunFolder(run).read_metrics()) == 3


@pytest.fixture(scope="module")
def trained(mnist_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    return train.train(tiny("train.epochs=1"), out, cache=mnist_cache, progress=False,
                       log=lambda s: None)  # fmt: skip


def test_checkpoint_save_load_equality(trained):
    cfg, model = runs.load_run(trained)
    saved = weights(trained)
    state = model.state_dict()
    assert saved.keys() == state.keys() and all(torch.equal(saved[k], state[k]) for k in saved)
    assert cfg.model.image_shape == [1, 28, 28]


def test_optimizer_state_round_trip(trained):
    from vaelab.models import build_model
    from vaelab.optim import make_optimizer

    cfg, model = runs.load_run(trained)
    opt = make_optimizer(cfg.train.optimizer, model.parameters(), lr=cfg.train.lr)
    run = runs.RunFolder(trained)
    run.load_optimizer(opt, run.read_state())
    tensors, meta = runs.optimizer_to_tensors(opt)
    saved, saved_meta, _ = runs.read_tensors(trained / "optimizer.safetensors")
    assert tensors.keys() == saved.keys() and all(torch.equal(tensors[k], saved[k]) for k in saved)
    assert json.loads(meta["param_groups"]) == json.loads(saved_meta["param_groups"])
    assert build_model  # imported for symmetry with load_run


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_planted_pickle_is_refused_and_never_runs(trained, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    marker = tmp_path / "pwned"
    (run / "model.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match="pickle"):
        runs.load_run(run)
    assert not marker.exists()
    # a stray .pt file refuses the whole folder
    shutil.copy(trained / "model.safetensors", run / "model.safetensors")
    (run / "extra.pt").write_bytes(pickle.dumps(_Payload(marker)))
    assert cli.main(["plot", str(run), "loss"]) == 1
    assert not marker.exists()


def test_tampered_weights_are_refused(trained, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    raw = bytearray((run / "model.safetensors").read_bytes())
    raw[-1] ^= 0x01
    (run / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256"):
        runs.load_run(run)


def test_refuses_to_overwrite_a_run(trained, mnist_cache):
    with pytest.raises(CheckpointError, match="already holds a run"):
        train.train(tiny("train.epochs=1"), trained, cache=mnist_cache, progress=False,
                    log=lambda s: None)  # fmt: skip


def test_resume_cannot_change_the_model(trained, capsys):
    assert cli.main(["train", "--resume", str(trained), "--set", "model.bottleneck=5"]) == 1
    assert "only train.*" in capsys.readouterr().err


@pytest.mark.slow
def test_plots_of_a_run(trained, mnist_cache, tmp_path):
    from PIL import Image

    for fig in ("latent", "recon", "loss"):
        out = tmp_path / f"{fig}.png"
        assert (
            cli.main(["plot", str(trained), fig, "--out", str(out), "--cache", str(mnist_cache)])
            == 0
        )
        assert Image.open(out).size[0] > 300
