"""End-to-end training on real MNIST subsets: the CLI, resume, checkpoints, refusals."""

import contextlib
import json
import os
import pickle
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vaelab.cli.train as cli_train
import vaelab.files as files
import vaelab.runs.folder as runs_folder
import vaelab.runs.load as runs_load
import vaelab.train.groups as train_groups
import vaelab.train.loop as train_loop
import vaelab.train.setup as train_setup
import vaelab.train.signals as train_signals
import vaelab.train.step as train_step
from vaelab import cli
from vaelab.config import load_config
from vaelab.data.dataset import ImageDataset
from vaelab.errors import CheckpointError, ConfigError, DataError, VaelabError
from vaelab.train.optimizers import KernelAdam  # what train.optimizer = "adam" builds

TINY = ["data.limit=1000", "data.test_limit=200", "model.widths=[64,32]", "train.batch_size=100"]
VAE = ["model.kind=vae", "data.binarize=dynamic", "model.activation=tanh"]


def tiny(*extra):
    return load_config(None, TINY + list(extra))


def quiet(cfg, out=None, **kw):
    return train_loop.train(cfg, out, progress=False, log=lambda s: None, **kw)


def weights(run_dir):
    return files.read_tensors(run_dir / "model.safetensors")[0]


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def straight_ae(mnist_cache, tmp_path_factory):
    """A tiny autoencoder trained for 2 epochs without a break."""
    return quiet(
        tiny("train.epochs=2"), tmp_path_factory.mktemp("straight") / "r", cache=mnist_cache
    )


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
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert lines[-1].startswith("epoch    4/4") and "eta" not in lines[-1]
    assert all(re.search(r"s  eta (\d+h)?\d+m\d\ds$", line) for line in lines[:3]), lines


@pytest.mark.parametrize("optimizer", ["adam", "amsgrad"])
def test_resume_is_bitwise(mnist_cache, tmp_path, optimizer):
    straight = train_loop.train(tiny("train.epochs=4", f"train.optimizer={optimizer}"),
                           tmp_path / "a", cache=mnist_cache, progress=False, log=lambda s: None)  # fmt: skip
    half = train_loop.train(tiny("train.epochs=2", f"train.optimizer={optimizer}"),
                       tmp_path / "b", cache=mnist_cache, progress=False, log=lambda s: None)  # fmt: skip
    cli.main(["train", "--resume", str(half), "--set", "train.epochs=4", "--cache",
              str(mnist_cache), "--no-progress"])  # fmt: skip
    a, b = weights(straight), weights(half)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    la = runs_folder.RunFolder(straight).read_metrics()
    lb = runs_folder.RunFolder(half).read_metrics()
    assert [m["train_loss"] for m in la] == [m["train_loss"] for m in lb]


@pytest.mark.parametrize("kind", ["ae", "vae-dynamic"])
def test_ctrl_c_mid_epoch_saves_and_resumes_exactly(
    kind, mnist_cache, tmp_path, monkeypatch, straight_ae
):
    extra = ["train.epochs=2"] + (VAE if kind == "vae-dynamic" else [])
    straight = (
        straight_ae if kind == "ae" else quiet(tiny(*extra), tmp_path / "a", cache=mnist_cache)
    )
    real_step, steps = KernelAdam.step, {"n": 0}
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job

    def step_then_ctrl_c(self, *args, **kwargs):
        steps["n"] += 1
        if steps["n"] == 13:  # 10 batches per epoch: epoch 2, batch 3
            # the trainer's handler must be installed, else this would stop pytest itself
            assert callable(signal.getsignal(signal.SIGINT))
            assert signal.getsignal(signal.SIGINT) not in (before, signal.default_int_handler)
            os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of the step
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(KernelAdam, "step", step_then_ctrl_c)
    with pytest.raises(train_loop.TrainingInterrupted, match="--resume"):
        quiet(tiny(*extra), tmp_path / "b", cache=mnist_cache)
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
    state = runs_folder.RunFolder(tmp_path / "b").read_state()
    assert (state["epoch"], state["batch"], state["step"]) == (1, 3, 13)  # the step finished
    monkeypatch.setattr(KernelAdam, "step", real_step)
    quiet(tiny(*extra), resume=tmp_path / "b", cache=mnist_cache)
    assert_same_weights(straight, tmp_path / "b")
    a, b = (
        runs_folder.RunFolder(straight).read_metrics(),
        runs_folder.RunFolder(tmp_path / "b").read_metrics(),
    )
    assert [m["train_loss"] for m in a] == [m["train_loss"] for m in b]


def test_ctrl_c_in_an_epochs_last_batch_stops_after_the_epoch(
    mnist_cache, tmp_path, monkeypatch, straight_ae
):
    """A signal during the last batch of an epoch stops the run at the epoch's end (a
    checkpoint at batch 10 of 10 resumed with zero epochs done and divided by it); an old
    checkpoint written there still resumes."""
    real_step, steps = KernelAdam.step, {"n": 0}

    def step_then_ctrl_c(self, *args, **kwargs):
        steps["n"] += 1
        if steps["n"] == 10:  # 10 batches per epoch: the last one of epoch 1
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(KernelAdam, "step", step_then_ctrl_c)
    with pytest.raises(train_loop.TrainingInterrupted, match="epoch 2, step 10"):
        quiet(tiny("train.epochs=2"), tmp_path / "b", cache=mnist_cache)
    state = runs_folder.RunFolder(tmp_path / "b").read_state()
    assert (state["epoch"], state["batch"], state["step"]) == (1, 0, 10)
    assert [m["epoch"] for m in runs_folder.RunFolder(tmp_path / "b").read_metrics()] == [1]
    monkeypatch.setattr(KernelAdam, "step", real_step)
    logged = []
    train_loop.train(tiny("train.epochs=2"), resume=tmp_path / "b", cache=mnist_cache,
                progress=False, log=logged.append)  # fmt: skip
    assert_same_weights(straight_ae, tmp_path / "b")
    # a checkpoint at an epoch's end but before its end-of-epoch work (batch = 10 of 10)
    path = tmp_path / "b" / "state.json"
    old = json.loads(path.read_text())
    first = runs_folder.RunFolder(tmp_path / "b").read_metrics()[0]
    old.update(epoch=0, batch=10, train_sum=first["train_loss"] * 1000, stopped=False)
    path.write_text(json.dumps(old))
    logged.clear()
    train_loop.train(tiny("train.epochs=2"), resume=tmp_path / "b", cache=mnist_cache,
                progress=False, log=logged.append)  # fmt: skip
    epochs = [line for line in logged if line.startswith("epoch")]
    assert epochs[0].startswith("epoch    1/2") and "eta ?" in epochs[0], logged
    assert [m["epoch"] for m in runs_folder.RunFolder(tmp_path / "b").read_metrics()] == [1, 2]
    # in the last batch of the last epoch: the run ends, and says it is finished
    steps["n"] = 0
    monkeypatch.setattr(KernelAdam, "step", step_then_ctrl_c)
    with pytest.raises(
        train_loop.TrainingInterrupted, match="as training ended .*the run is finished"
    ):
        quiet(tiny("train.epochs=1"), tmp_path / "c", cache=mnist_cache)
    assert runs_folder.RunFolder(tmp_path / "c").read_state()["epoch"] == 1


@contextlib.contextmanager
def held_elsewhere(lock: Path, holder: bytes):
    """Another process holding the run folder's lock ``lock``, its file saying ``holder``."""
    hold = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.ftruncate(fd, 0); os.write(fd, sys.argv[2].encode()); "
            "print('held', flush=True); time.sleep(120)")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", hold, str(lock), holder.decode()],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "held"
        yield
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_folder_in_training_is_refused_to_a_second_process(mnist_cache, tmp_path, capsys):
    """While another process holds a run folder (as a trainer does), --resume of it is one
    line naming that process and changes nothing; once the holder is gone (even killed),
    the run resumes."""
    run = quiet(tiny("train.epochs=1"), tmp_path / "r", cache=mnist_cache)

    def files():
        return {f.name: f.read_bytes() for f in run.iterdir() if f.name != runs_folder.LOCK}

    before = files()
    argv = ["train", "--resume", str(run), "--set", "train.epochs=2", "--no-progress",
            "--cache", str(mnist_cache)]  # fmt: skip
    with held_elsewhere(run / runs_folder.LOCK, b"4242"):
        assert cli.main(argv) == 1
        err = capsys.readouterr().err
        assert "in use by another vaelab process (pid 4242)" in err and "Traceback" not in err
        assert files() == before
    assert cli.main(argv) == 0
    assert [m["epoch"] for m in runs_folder.RunFolder(run).read_metrics()] == [1, 2]
    assert (run / runs_folder.LOCK).read_text().startswith(f"{os.getpid()} on ")


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_new_run_into_a_held_folder_is_refused(mnist_cache, tmp_path, capsys):
    """The trainer takes the folder before anything else: a fresh `train --out X` while
    another process holds X writes nothing there. A run refused before it wrote anything
    leaves no folder; a finished run's state is read without making a lock file."""
    out = tmp_path / "x"
    out.mkdir()
    config = str(Path(__file__).parents[1] / "configs" / "mnist_ae.toml")
    argv = ["train", config, "--out", str(out), "--no-progress", "--cache", str(mnist_cache)]
    argv += [a for t in TINY + ["train.epochs=1"] for a in ("--set", t)]
    with held_elsewhere(out / runs_folder.LOCK, b"77 on elsewhere"):
        assert cli.main(argv) == 1
        assert "in use by another vaelab process (pid 77 on elsewhere)" in capsys.readouterr().err
        assert [f.name for f in out.iterdir()] == [runs_folder.LOCK]
    with pytest.raises(VaelabError):  # refused after the folder was taken: no trace left
        quiet(tiny("data.name=nosuch"), tmp_path / "new" / "r", cache=mnist_cache)
    assert not (tmp_path / "new").exists()
    run = quiet(tiny("train.epochs=1"), tmp_path / "done", cache=mnist_cache)
    (run / runs_folder.LOCK).unlink()
    runs_folder.RunFolder(run).read_state()
    assert not (run / runs_folder.LOCK).exists()
    with pytest.raises(ConfigError, match="a folder each"):
        train_loop.train_runs([tiny(), tiny()], [run, tmp_path / "done" / "."], True, mnist_cache,
                         False, lambda s: None, True)  # fmt: skip


def test_an_unwritable_run_folder_is_one_line(tmp_path, monkeypatch):
    real_open = os.open

    def refused(path, *args, **kwargs):
        if str(path).endswith(runs_folder.LOCK):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refused)
    with pytest.raises(CheckpointError, match="cannot write in run folder .*Permission denied"):
        with runs_folder.RunFolder(tmp_path / "r").held():
            pass


def test_the_test_split_must_hold_other_images(mnist_cache):
    """MNIST's valid is rows 50,000-60,000 of its train split: another name, the same
    images. Disjoint rows (a limit, train50k) are fine."""
    with pytest.raises(
        ConfigError, match=r"share 10,000 images \('mnist' 'train' rows 50,000-60,000\)"
    ):
        train_setup.load_splits(load_config(None, ["data.test_split=valid"]), mnist_cache)
    with pytest.raises(ConfigError, match="share 1,000 images"):
        train_setup.load_splits(load_config(None, ["data.split=valid", "data.test_split=train",
                                             "data.test_limit=51000"]), mnist_cache)  # fmt: skip
    for ok in (["data.split=train50k", "data.test_split=valid"],
               ["data.limit=50000", "data.test_split=valid"]):  # fmt: skip
        tr, te = train_setup.load_splits(load_config(None, ok), mnist_cache)
        assert len(tr) == 50_000 and len(te) == 10_000


def test_second_ctrl_c_interrupts_at_once():
    before = signal.getsignal(signal.SIGINT)
    with train_signals.deferred_interrupts() as interrupted:
        assert signal.getsignal(signal.SIGINT) is not before
        assert signal.getsignal(signal.SIGTERM) is signal.getsignal(signal.SIGINT)
        assert not interrupted()
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupted()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # let the handler run
                pass
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rng_is_forked_and_checkpointed(mnist_cache, tmp_path):
    from vaelab.device import seeded

    device = torch.device("cuda")
    torch.cuda.manual_seed(1)
    before = torch.cuda.get_rng_state(device)
    with seeded(3, device):
        a = torch.randn(4, device=device)
    assert torch.equal(torch.cuda.get_rng_state(device), before)
    with seeded(3, device):
        assert torch.equal(torch.randn(4, device=device), a)
    run = quiet(
        tiny("train.epochs=1", "train.device=cuda", *VAE), tmp_path / "r", cache=mnist_cache
    )
    rng = runs_folder.RunFolder(run).read_state()["rng"]
    assert rng["device"] == "cuda" and "cuda" in rng


def test_mps_rng_is_seeded_and_given_back(monkeypatch):
    """On mps (absent here: its three RNG functions are stand-ins) the device's generator is
    seeded inside the block and its state comes back afterwards, also after an error."""
    from vaelab.device import seeded

    calls = []
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda: "state before")
    monkeypatch.setattr(torch.mps, "manual_seed", lambda s: calls.append(("seed", s)))
    monkeypatch.setattr(torch.mps, "set_rng_state", lambda s: calls.append(("restore", s)))
    cpu = torch.random.get_rng_state()
    with seeded(3, "mps"):
        assert calls == [("seed", 3)]
        torch.randn(2)
    assert calls[-1] == ("restore", "state before")
    assert torch.equal(torch.random.get_rng_state(), cpu)
    with pytest.raises(KeyError), seeded(4, "mps"):
        raise KeyError
    assert calls[-2:] == [("seed", 4), ("restore", "state before")]


class Crash(Exception):
    """A simulated crash (power cut) in the middle of a checkpoint."""


def test_checkpoint_cut_before_state_json_resumes_from_the_previous(
    mnist_cache, tmp_path, monkeypatch, straight_ae
):
    real, writes = files.atomic_write, []

    def cut(path, write):
        if path.name == "state.json":
            writes.append(path)
            if len(writes) == 2:  # the checkpoint of epoch 2
                raise Crash
        return real(path, write)

    monkeypatch.setattr(runs_folder, "atomic_write", cut)
    run = tmp_path / "r"
    with pytest.raises(Crash):
        quiet(tiny("train.epochs=2"), run, cache=mnist_cache)
    monkeypatch.setattr(runs_folder, "atomic_write", real)
    assert (run / "model.safetensors.next").exists()  # epoch 2's weights, not described
    assert runs_folder.RunFolder(run, writer=False).read_state()["epoch"] == 1
    runs_load.load_run(run)  # epoch 1's files load
    assert len(runs_folder.RunFolder(run).read_metrics()) == 2  # epoch 2 was logged before the cut
    quiet(tiny("train.epochs=2"), resume=run, cache=mnist_cache)
    assert not list(run.glob("*.next"))
    assert_same_weights(straight_ae, run)
    a, b = (
        runs_folder.RunFolder(straight_ae).read_metrics(),
        runs_folder.RunFolder(run).read_metrics(),
    )
    assert [m["epoch"] for m in b] == [1, 2]  # epoch 2 logged once, after the resume
    assert [m["train_loss"] for m in a] == [m["train_loss"] for m in b]


def test_checkpoint_cut_before_the_renames_rolls_forward(
    mnist_cache, tmp_path, monkeypatch, straight_ae
):
    real, commits = runs_folder.RunFolder._commit, []

    def cut(self, names):
        commits.append(names)
        if len(commits) == 2:  # the checkpoint of epoch 2
            raise Crash
        return real(self, names)

    monkeypatch.setattr(runs_folder.RunFolder, "_commit", cut)
    run = tmp_path / "r"
    with pytest.raises(Crash):
        quiet(tiny("train.epochs=2"), run, cache=mnist_cache)
    monkeypatch.setattr(runs_folder.RunFolder, "_commit", real)
    assert runs_folder.RunFolder(run, writer=False).read_state()["epoch"] == 2
    saved, in_place = weights(straight_ae), weights(run)
    assert any(not torch.equal(saved[k], in_place[k]) for k in saved)  # still epoch 1's
    _, model = runs_load.load_run(run)  # a reader finds epoch 2's files under their pending names
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert (run / "model.safetensors.next").exists()  # a reader moves nothing
    quiet(tiny("train.epochs=2"), resume=run, cache=mnist_cache)  # the writer rolls forward
    assert not list(run.glob("*.next"))
    assert_same_weights(straight_ae, run)


def test_nan_stops_and_keeps_last_good_checkpoint(mnist_cache, tmp_path, monkeypatch):
    from vaelab.models.ae import Autoencoder

    real = Autoencoder.objective
    steps = {"n": 0}

    def poisoned(self, x, y=None):
        steps["n"] += 1
        out = real(self, x, y)
        return out * float("nan") if steps["n"] == 15 else out

    monkeypatch.setattr(Autoencoder, "objective", poisoned)
    # calls 1-10 train epoch 1, call 11 is its test loss, so call 15 is step 14; the loss
    # is read back every 10 steps (no host sync per step), so the NaN shows at step 20
    with pytest.raises(
        train_loop.TrainingDiverged, match=r"epoch 2 \(within steps 11-20\).*epoch 1"
    ):
        train_loop.train(tiny("train.epochs=3"), tmp_path / "r", cache=mnist_cache, progress=False,
                    log=lambda s: None)  # fmt: skip
    assert runs_folder.RunFolder(tmp_path / "r").read_state()["epoch"] == 1
    cfg, model = runs_load.load_run(tmp_path / "r")  # the kept checkpoint loads
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_nan_test_loss_stops_and_says_no_checkpoint_yet(mnist_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(train_loop, "mean_terms", lambda *a, **kw: {"loss": float("nan")})
    with pytest.raises(
        train_loop.TrainingDiverged,
        match="test loss is nan after epoch 1.*no checkpoint was written",
    ):
        quiet(tiny("train.epochs=2"), tmp_path / "r", cache=mnist_cache)
    assert not (tmp_path / "r" / "state.json").exists()


def test_a_saturated_run_stops_instead_of_finishing_with_exit_0(mnist_cache, tmp_path, capsys):
    """SGD at lr 1000 pins the sigmoid outputs: the loss stays put and nothing is learnt."""
    out = tmp_path / "r"
    config = str(Path(__file__).parents[1] / "configs" / "mnist_ae.toml")
    code = cli.main(["train", config, "--cache", str(mnist_cache), "--out",
                     str(out), "--no-progress",
                     *[a for s in TINY for a in ("--set", s)], "--set", "train.optimizer=sgd",
                     "--set", "train.lr=1000", "--set", "train.epochs=8"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "the network has saturated" in err and "train.lr = 1000" in err
    epochs = runs_folder.RunFolder(out).read_state()["epoch"]
    assert epochs < 8
    # a learning run, and one at lr = 0 (nothing may change), are not stopped
    quiet(tiny("train.epochs=4"), tmp_path / "ok", cache=mnist_cache)
    quiet(tiny("train.epochs=3", "train.lr=0"), tmp_path / "zero", cache=mnist_cache)


def test_unavailable_device_is_a_config_error(mnist_cache, tmp_path):
    with pytest.raises(ConfigError, match="train.device = 'gpu'"):
        quiet(tiny("train.device=gpu"), tmp_path / "r", cache=mnist_cache)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="train.device = 'cuda'"):
            quiet(tiny("train.device=cuda"), tmp_path / "r", cache=mnist_cache)


def test_test_labels_must_be_training_classes():
    cfg = tiny("model.kind=vae", "model.conditional=true")
    images = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    digits = [str(i) for i in range(10)]
    train_set = ImageDataset(images, torch.tensor([0, 1, 2, 1]), digits[:3], "t")
    ok = ImageDataset(images, torch.tensor([0, 2, 2, 1]), digits[:3], "t")
    assert train_setup._classes(cfg, train_set, ok) == ["0", "1", "2"]
    beyond = ImageDataset(images, torch.tensor([0, 1, 7, 1]), digits, "t")
    with pytest.raises(DataError, match="label 7.*3 classes"):
        train_setup._classes(cfg, train_set, beyond)
    with pytest.raises(DataError, match="needs labels"):
        train_setup._classes(cfg, train_set, ImageDataset(images, None, [], "t"))


def test_a_new_run_starts_a_fresh_metrics_file(mnist_cache, tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"epoch": 7, "train_loss": 1.0}\nnot json\n')
    quiet(tiny("train.epochs=1"), run, cache=mnist_cache)
    assert [m["epoch"] for m in runs_folder.RunFolder(run).read_metrics()] == [1]


def test_resume_drops_a_metrics_line_cut_off_by_a_kill(tmp_path):
    run = runs_folder.RunFolder(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "a": 1}\n{"epoch": 2, "st')
    with pytest.raises(CheckpointError, match="line 2"):
        run.read_metrics()
    run.reset_metrics(upto_epoch=1)
    assert run.read_metrics() == [{"epoch": 1, "a": 1}]
    # a bad line in the middle is damage, not a torn append: still refused
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\nnot json\n{"epoch": 2}\n')
    with pytest.raises(CheckpointError, match="line 2"):
        run.reset_metrics(upto_epoch=1)


def test_malformed_metrics_line_is_named(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2\n')
    with pytest.raises(CheckpointError, match=r"metrics.jsonl, line 2"):
        runs_folder.RunFolder(tmp_path).read_metrics()


def test_splits_with_differently_named_classes_are_refused():
    x = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    a = ImageDataset(x, torch.tensor([0, 1]), ["cat", "dog"], "pets")
    b = ImageDataset(x, torch.tensor([0, 1]), ["dog", "cat"], "pets")
    cfg = tiny("model.kind=classifier")
    assert train_setup._classes(cfg, a, a) == ["cat", "dog"]
    with pytest.raises(DataError, match=r"name their classes differently \(cat, dog vs dog, cat\)"):
        train_setup._classes(cfg, a, b)


def test_lr_decays_geometrically_from_lr_to_lr_times_decay(mnist_cache, tmp_path, monkeypatch):
    cfg = tiny("train.epochs=5", "train.lr=0.01", "train.lr_decay=0.1", "data.limit=200",
               "data.test_limit=100")  # fmt: skip
    expected = [0.01 * 0.1 ** (e / 4) for e in range(5)]  # 1e-2 … 1e-3
    assert [train_loop.epoch_lr(cfg, e) for e in range(5)] == pytest.approx(expected)
    seen = []
    step = KernelAdam.step

    def spy(self, closure=None):
        seen.append(self.param_groups[0]["lr"])
        return step(self, closure)

    monkeypatch.setattr(KernelAdam, "step", spy)
    quiet(cfg, tmp_path / "r", cache=mnist_cache)
    per_epoch = len(seen) // 5
    assert [seen[e * per_epoch] for e in range(5)] == pytest.approx(expected)
    assert train_loop.epoch_lr(tiny("train.epochs=1", "train.lr_decay=0.1"), 0) == pytest.approx(
        3e-4
    )


def test_early_stopping(mnist_cache, tmp_path):
    # lr 0 never improves the test loss: stops after 1 + patience epochs
    run = train_loop.train(tiny("train.epochs=10", "train.lr=0.0", "train.early_stopping=2",
                           "train.optimizer=sgd"), tmp_path / "r", cache=mnist_cache,
                      progress=False, log=lambda s: None)  # fmt: skip
    assert len(runs_folder.RunFolder(run).read_metrics()) == 3


@pytest.fixture(scope="module")
def trained(mnist_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    return train_loop.train(tiny("train.epochs=1"), out, cache=mnist_cache, progress=False,
                       log=lambda s: None)  # fmt: skip


def test_recorded_test_loss_and_eval_agree_with_direct_computation(trained, mnist_cache):
    """metrics.jsonl's test loss is the saved model's mean per-example loss over the test
    split (not per batch, not summed over pixels differently), and eval's MSE is
    F.mse_loss over all test pixels."""
    import torch.nn.functional as F

    from vaelab.eval.common import mean_objective
    from vaelab.eval.likelihood import evaluate_ae

    cfg, model = runs_load.load_run(trained)
    batches = runs_load.load_test_batches(
        cfg, mnist_cache, cfg.data.test_limit, batch_size=64
    )  # 3·64 + 8
    x = torch.cat([b for b, _ in batches])  # (200, 1, 28, 28)
    with torch.no_grad():
        direct = float(model.objective(x).double().mean())
        mse = float(F.mse_loss(model.reconstruct(x), x))
    recorded = runs_folder.RunFolder(trained).read_metrics()[-1]["test_loss"]
    assert mean_objective(model, batches) == pytest.approx(direct, rel=1e-6)
    assert recorded == pytest.approx(direct, rel=1e-5)
    result = evaluate_ae(model, batches)
    assert result["n_images"] == 200 and result["recon_mse_per_pixel"] == pytest.approx(
        mse, rel=1e-5
    )


def test_checkpoint_save_load_equality(trained):
    cfg, model = runs_load.load_run(trained)
    saved = weights(trained)
    state = model.state_dict()
    assert saved.keys() == state.keys() and all(torch.equal(saved[k], state[k]) for k in saved)
    assert cfg.model.image_shape == [1, 28, 28]


def test_optimizer_state_round_trip(trained, tmp_path):
    import copy

    from vaelab.train.optimizers import make_optimizer

    cfg, model = runs_load.load_run(trained)
    opt = make_optimizer(cfg.train.optimizer, model.parameters(), lr=cfg.train.lr)
    run = runs_folder.RunFolder(trained)
    run.load_optimizer(opt, run.read_state())
    tensors, meta = runs_folder.optimizer_to_tensors(opt)
    saved, saved_meta, _ = files.read_tensors(trained / "optimizer.safetensors")
    assert tensors.keys() == saved.keys() and all(torch.equal(tensors[k], saved[k]) for k in saved)
    assert json.loads(meta["param_groups"]) == json.loads(saved_meta["param_groups"])
    # N more steps from the optimizer in memory and from its round trip through a file (as a
    # checkpoint takes it) give the same weights
    files.write_tensors(tmp_path / "opt.safetensors", tensors, meta)
    back, back_meta, _ = files.read_tensors(tmp_path / "opt.safetensors")
    twin = copy.deepcopy(model)
    twin_opt = make_optimizer(cfg.train.optimizer, twin.parameters(), lr=cfg.train.lr)
    runs_folder.optimizer_from_tensors(twin_opt, back, back_meta)
    x = torch.rand(6, 50, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    before = [t.clone() for t in model.parameters()]
    for net, optimizer in ((model, opt), (twin, twin_opt)):
        net.train()
        for batch in x:
            optimizer.zero_grad()
            net.objective(batch).mean().backward()
            optimizer.step()
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters(), strict=True)
    )
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


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
        runs_load.load_run(run)
    assert not marker.exists()
    # a stray .pt file refuses the whole folder
    shutil.copy(trained / "model.safetensors", run / "model.safetensors")
    (run / "extra.pt").write_bytes(pickle.dumps(_Payload(marker)))
    assert cli.main(["plot", str(run), "loss"]) == 1
    assert not marker.exists()


@pytest.mark.parametrize("low", [b"\x80", b"PK"])
def test_safetensors_whose_header_length_looks_like_pickle_or_zip_loads(tmp_path, low):
    """A header of 0x880 bytes starts the file with 0x80 (the pickle opcode), one of 0x4B50
    with "PK" (zip): a finished run's optimizer file was once refused for that."""
    tensors = {"w": torch.arange(6.0).reshape(2, 3)}
    for pad in range(40_000):
        raw = files.st_save(tensors, metadata={"pad": "x" * pad})
        if raw.startswith(low):
            break
    path = tmp_path / "t.safetensors"
    files.write_tensors(path, tensors, {"pad": "x" * pad})
    assert path.read_bytes().startswith(low)
    back, meta, _ = files.read_tensors(path)
    torch.testing.assert_close(back["w"], tensors["w"])
    assert meta["pad"] == "x" * pad


def test_test_every_skips_test_losses_and_early_stops_only_when_tested(mnist_cache, tmp_path):
    run = quiet(tiny("train.epochs=5", "train.test_every=2"), tmp_path / "r", cache=mnist_cache)
    tested = [m["test_loss"] is not None for m in runs_folder.RunFolder(run).read_metrics()]
    assert tested == [False, True, False, True, True]  # the last epoch is always tested
    every = quiet(tiny("train.epochs=5"), tmp_path / "e", cache=mnist_cache)
    assert_same_weights(run, every)  # skipping the test loss changes nothing else
    # lr 0 never improves: patience 1 would stop after epoch 2, but epoch 2 is untested
    run = quiet(tiny("train.epochs=10", "train.lr=0.0", "train.early_stopping=1",
                     "train.optimizer=sgd", "train.test_every=3"), tmp_path / "s",
                cache=mnist_cache)  # fmt: skip
    assert len(runs_folder.RunFolder(run).read_metrics()) == 6
    assert runs_folder.RunFolder(run).read_state()["stopped"]
    out = tmp_path / "loss.png"
    assert cli.main(["plot", str(run), "loss", "--out", str(out)]) == 0 and out.exists()


def test_tampered_weights_are_refused(trained, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    raw = bytearray((run / "model.safetensors").read_bytes())
    raw[-1] ^= 0x01
    (run / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256"):
        runs_load.load_run(run)


def test_refuses_to_overwrite_a_run(trained, mnist_cache):
    with pytest.raises(CheckpointError, match="already holds a run"):
        train_loop.train(tiny("train.epochs=1"), trained, cache=mnist_cache, progress=False,
                    log=lambda s: None)  # fmt: skip


def test_resume_cannot_change_the_model(trained, capsys):
    assert cli.main(["train", "--resume", str(trained), "--set", "model.bottleneck=5"]) == 1
    assert "--set model.bottleneck cannot change on --resume" in capsys.readouterr().err


def test_resume_overrides_are_few_and_warn_on_a_stretched_schedule(capsys):
    cfg = tiny("train.epochs=4")
    for key in ("train.lr=0.1", "train.seed=3", "train.optimizer=sgd", "data.limit=10"):
        with pytest.raises(VaelabError, match=f"--set {key.split('=')[0]} cannot change"):
            cli_train._apply_resume_overrides(cfg, [key])
    new = cli_train._apply_resume_overrides(cfg, ["train.epochs=8", "train.early_stopping=2",
                                            "train.checkpoint_every=3", "train.threads=1",
                                            "train.device=cpu", 'train.precision="bf16"'])  # fmt: skip
    assert new.train.precision == "bf16"
    assert (new.train.epochs, new.train.early_stopping, new.train.checkpoint_every) == (8, 2, 3)
    assert "warning" not in capsys.readouterr().err  # lr_decay = 1: nothing stretches
    decaying = tiny("train.epochs=4", "train.lr_decay=0.1")
    cli_train._apply_resume_overrides(decaying, ["train.epochs=8"])
    assert "vaelab: warning: train.epochs 4 -> 8" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="train.epochs must be >= 1"):
        cli_train._apply_resume_overrides(cfg, ["train.epochs=0"])


def test_resuming_a_finished_run_changes_nothing(trained, mnist_cache, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)  # 1 epoch of 1: finished
    before = {f.name: f.read_bytes() for f in run.iterdir()}
    argv = ["train", "--resume", str(run), "--cache", str(mnist_cache), "--no-progress"]
    assert cli.main(argv) == 0
    assert "already trained (1/1 epochs); nothing to do" in capsys.readouterr().out
    assert {f.name: f.read_bytes() for f in run.iterdir()} == before
    assert cli.main([*argv, "--out", str(tmp_path / "elsewhere")]) == 1
    assert "--out cannot go with it" in capsys.readouterr().err
    # an early-stopped run stays stopped, unless its patience grows
    stopped = quiet(tiny("train.epochs=10", "train.lr=0.0", "train.early_stopping=1",
                         "train.optimizer=sgd"), tmp_path / "s", cache=mnist_cache)  # fmt: skip
    assert (
        cli.main(["train", "--resume", str(stopped), "--cache", str(mnist_cache), "--no-progress"])
        == 0
    )
    assert "already stopped early (2/10 epochs)" in capsys.readouterr().out
    assert len(runs_folder.RunFolder(stopped).read_metrics()) == 2


def test_resume_of_an_incomplete_state_is_a_one_line_error(trained, mnist_cache, tmp_path, capsys):
    """The finished-run check reads the state's progress before restoring it: a state.json
    without its epoch is the same CheckpointError the restore gives, not a KeyError."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    state = json.loads((run / "state.json").read_text())
    del state["epoch"]
    (run / "state.json").write_text(json.dumps(state))
    argv = ["train", "--resume", str(run), "--cache", str(mnist_cache), "--no-progress",
            "--set", "train.epochs=2"]  # fmt: skip
    assert cli.main(argv) == 1
    assert "state.json is incomplete (epoch)" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="incomplete"):  # a sweep's folder alike
        train_groups.train_group(
            [runs_folder.RunFolder(run).read_config()], [run], cache=mnist_cache
        )


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


def test_compile_falls_back_to_eager(monkeypatch):
    """A torch.compile that fails at the first call leaves training running eagerly."""

    def broken_compile(fn):
        def call(*args):
            raise RuntimeError("no C++ compiler")

        return call

    monkeypatch.setattr(train_loop.torch, "compile", broken_compile)
    messages = []
    fn = train_step.compiled(lambda x, y: x + 1, True, messages.append)
    assert fn(1, None) == 2 and fn(2, None) == 3
    assert len(messages) == 1 and "torch.compile failed" in messages[0]
    assert train_step.compiled(len, False, messages.append) is len


def test_autocast_names_every_precision():
    from vaelab.config_checks import PRECISIONS

    assert set(train_step.AUTOCAST) | {"fp32", "auto"} == set(PRECISIONS)  # auto: resolved first


@pytest.mark.parametrize("kind", ["ae", "vae", "iwae", "classifier"])
def test_bf16_step_keeps_fp32_losses_weights_and_grads(kind):
    """Under train.precision = bf16 the matmuls run in bfloat16, but the losses the trainer
    sums, the weights and their gradients stay fp32, and equal the fp32 step's to
    bfloat16's precision (8 bits of mantissa: ~0.4 % per rounding, more where sums cancel)."""
    extra = {"ae": [], "vae": VAE, "iwae": VAE + ["model.k=5"],
             "classifier": ["model.kind=classifier", "model.arch=conv", "model.classes=['0','1','2']"]}[kind]  # fmt: skip
    cfg = tiny(*extra)
    cfg.model.image_shape = [1, 28, 28]
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(16, 1, 28, 28, generator=gen) < 0.3).float()
    y = torch.randint(3, (16,), generator=gen)
    out = {}
    for precision in ("fp32", "bf16"):
        model, _ = train_setup.setup_model(cfg, torch.device("cpu"))
        frozen = torch.optim.SGD(model.parameters(), lr=0.0)  # keeps the gradients to compare
        step = train_step.step_function([model], [frozen], precision=precision)
        torch.manual_seed(1)  # the same ε for both precisions
        losses = step(x, y)
        assert losses.dtype == torch.float32 and losses.shape == (1, 16)
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(p.dtype == torch.float32 for p in model.parameters())
        assert all(g.dtype == torch.float32 for g in grads)
        out[precision] = losses, torch.cat([g.flatten() for g in grads])
    (l32, g32), (l16, g16) = out["fp32"], out["bf16"]
    assert not torch.equal(l32, l16)  # bfloat16 did run
    torch.testing.assert_close(l16, l32, rtol=1e-2, atol=0.0)
    # the same descent direction: a conv net's cancellations left ~8 % relative error here
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) > 0.98
    assert (g16 - g32).norm() < 0.2 * g32.norm()


def test_bf16_training_learns_like_fp32(mnist_cache, tmp_path):
    """Two epochs of a tiny VAE in bf16 end near the same run in fp32 (the test loss, always
    computed in fp32, within 0.5 % of ~200 nats; measured here: 0.1 nats apart)."""
    final = {}
    for precision in ("fp32", "bf16"):
        cfg = tiny(*VAE, "train.epochs=2", "train.lr=1e-3", f'train.precision="{precision}"')
        run = quiet(cfg, tmp_path / precision, cache=mnist_cache)
        final[precision] = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["bf16"]["test_loss"] != final["fp32"]["test_loss"]
    assert abs(final["bf16"]["test_loss"] / final["fp32"]["test_loss"] - 1) < 5e-3, final


def test_bf16_losses_and_posterior_are_computed_in_fp32(monkeypatch, mnist_cache, tmp_path):
    """Under autocast the likelihood sees fp32 logits and μ, log σ² are fp32 (so no sum over
    784 pixels rounds at 8 bits), and the per-epoch test loss runs with autocast off."""
    from vaelab.models import likelihoods as models

    cfg = tiny(*VAE, "model.k=3")
    cfg.model.image_shape = [1, 28, 28]
    model, _ = train_setup.setup_model(cfg, torch.device("cpu"))
    seen = []
    log_prob, mean = models.LIKELIHOODS["bernoulli"]
    monkeypatch.setitem(models.LIKELIHOODS, "bernoulli",
                        (lambda logits, *a: seen.append(logits.dtype) or log_prob(logits, *a), mean))  # fmt: skip
    log_prob_k = models.LOG_PROB_K["bernoulli"]  # k draws per image (k = 3 here)
    monkeypatch.setitem(models.LOG_PROB_K, "bernoulli",
                        lambda logits, *a: seen.append(logits.dtype) or log_prob_k(logits, *a))  # fmt: skip
    x = (torch.rand(4, 1, 28, 28) < 0.5).float()
    with train_step.autocast(torch.device("cpu"), "bf16"):
        mu, logvar = model.posterior(x)
        assert model.encoder(x).dtype == torch.bfloat16  # autocast is on
        model.objective(x)
    assert mu.dtype == logvar.dtype == torch.float32 and seen == [torch.float32]

    autocast_during_test_loss = []
    real = train_loop.mean_terms

    def spy(*args, **kw):
        autocast_during_test_loss.append(torch.is_autocast_enabled("cpu"))
        return real(*args, **kw)

    monkeypatch.setattr(train_loop, "mean_terms", spy)
    quiet(tiny(*VAE, "train.epochs=1", 'train.precision="bf16"'), tmp_path / "r", cache=mnist_cache)
    assert autocast_during_test_loss == [False]


def test_unavailable_precision_fails_before_writing(monkeypatch, mnist_cache, tmp_path):
    def no_bf16(*args, **kw):
        raise RuntimeError("Current CUDA Device does not support bfloat16.")

    monkeypatch.setattr(train_loop.torch, "autocast", no_bf16)
    with pytest.raises(ConfigError, match="train.precision = 'bf16' on cpu: Current CUDA"):
        quiet(tiny('train.precision="bf16"'), tmp_path / "r", cache=mnist_cache)
    assert not (tmp_path / "r").exists()


def test_resume_in_another_precision(trained, mnist_cache, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    args = ["train", "--resume", str(run), "--no-progress", "--cache", str(mnist_cache),
            "--set", "train.epochs=2", "--set", 'train.precision="bf16"']  # fmt: skip
    assert cli.main(args) == 0
    assert "train.precision fp32 -> bf16" in capsys.readouterr().err
    assert runs_folder.RunFolder(run).read_config().train.precision == "bf16"
    assert [m["epoch"] for m in runs_folder.RunFolder(run).read_metrics()] == [1, 2]


def test_keep_best_keeps_the_best_test_loss_epoch(mnist_cache, tmp_path, monkeypatch):
    """#17: the test losses are made to peak at epoch 2 of 4: eval/sample load epoch 2's
    weights (the same as an unbroken 2-epoch run's), training resumes from the last, and
    a tampered best file is refused."""
    losses = iter([5.0, 1.0, 3.0, 2.0, 9.0, 9.0])
    real = train_loop.test_terms

    def scripted(loop, model, seed):
        terms = real(loop, model, seed)
        return {**terms, "loss": next(losses)}

    monkeypatch.setattr(train_loop, "test_terms", scripted)
    cfg = tiny("train.epochs=4", "train.keep_best=true", "train.checkpoint_every=3")
    run = quiet(cfg, tmp_path / "kb", cache=mnist_cache)
    monkeypatch.setattr(train_loop, "test_terms", real)
    two = quiet(tiny("train.epochs=2", "train.keep_best=true"), tmp_path / "two", cache=mnist_cache)
    best = files.read_tensors(run / "best.safetensors")[0]
    assert all(torch.equal(best[k], weights(two)[k]) for k in best)
    assert not all(torch.equal(best[k], weights(run)[k]) for k in best)  # the last differs
    _, model = runs_load.load_run(run)
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items() if k in best)
    state = runs_folder.RunFolder(run).read_state()
    assert state["epoch"] == 4 and "best.safetensors" in state["files"]
    # the ex-post Gaussian was fitted to the best model's codes
    gauss = files.read_tensors(run / "stage-expost_gaussian.safetensors")[0]
    gauss_two = files.read_tensors(two / "stage-expost_gaussian.safetensors")[0]
    torch.testing.assert_close(gauss["mean"], gauss_two["mean"])
    # resuming goes on from the last epoch, and keeps the best file recorded
    monkeypatch.setattr(train_loop, "test_terms", scripted)
    quiet(tiny("train.epochs=6", "train.keep_best=true", "train.checkpoint_every=3"),
          cache=mnist_cache, resume=run)  # fmt: skip
    assert runs_folder.RunFolder(run).read_state()["files"]["best.safetensors"]
    # a stage fitted again later fits the kept (best) weights too
    assert cli.main(["stage", str(run), "--redo", "--cache", str(mnist_cache)]) == 0
    again = files.read_tensors(run / "stage-expost_gaussian.safetensors")[0]
    torch.testing.assert_close(again["mean"], gauss_two["mean"])
    raw = bytearray((run / "best.safetensors").read_bytes())
    raw[-1] ^= 1
    (run / "best.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="best.safetensors does not match"):
        runs_load.load_run(run)
