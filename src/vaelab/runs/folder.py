"""Run folders: the config, weights, optimizer state, training state and metrics of a run.

Nothing here ever unpickles. Weights and optimizer tensors are safetensors, everything
else is TOML or JSON; ``state.json`` records the sha256 of each tensor file, so a file
that was swapped or tampered with is refused with a clear error. A run folder holding a
pickle (``.pt``, ``.pkl`` …, or a ``.safetensors`` that really is a pickle) is refused
before anything in it is read.

A run folder, as the trainer writes it::

    config.toml            resolved configuration (constructor arguments of the model)
    model.safetensors      model weights
    optimizer.safetensors  optimizer state (tensors; scalars and groups in its metadata)
    state.json             epoch, step, RNG states, best loss, file hashes
    metrics.jsonl          one JSON record per epoch, appended as it happens
    stage-NAME.safetensors what a stage fitted after training (hashed in state.json
                           under "stages"; a later checkpoint drops them, to be fitted anew)
    .lock                  held (flock) by the process training in the folder

A checkpoint writes the new tensor files as ``*.safetensors.next``, then ``state.json``
(atomically, with their hashes), then renames them into place; a reader finds the files
``state.json`` describes at either name, and the writer finishes (or discards) the renames.
One process at a time trains in a folder (:meth:`RunFolder.held`): a second one, say the
same sweep started twice, is refused by name instead of both writing the same files.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from vaelab.config import Config, dumps, load_config
from vaelab.errors import CheckpointError, VaelabError
from vaelab.files import (
    atomic_write,
    read_tensors,
    remove_stale_temporaries,
    sha256_file,
    write_tensors,
)

try:
    import fcntl
except ImportError:  # Windows: no flock, run folders are not guarded
    fcntl = None

PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib"}
CONFIG, MODEL, OPTIMIZER, STATE, METRICS = (
    "config.toml",
    "model.safetensors",
    "optimizer.safetensors",
    "state.json",
    "metrics.jsonl",
)
BEST = "best.safetensors"  # train.keep_best: the weights of the best test-loss epoch
TENSOR_FILES = (MODEL, OPTIMIZER, BEST)
PENDING = ".next"  # suffix of tensor files written but not yet moved into place
LOCK = ".lock"
_HELD: dict[Path, int] = {}  # run folders this process holds -> its lock file's descriptor


# --------------------------------------------------------------------------------------
# Optimizer state <-> tensors + JSON
# --------------------------------------------------------------------------------------


def optimizer_to_tensors(
    opt: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Split ``opt.state_dict()`` into tensors and JSON metadata (scalars, param groups)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    try:
        meta = {"param_groups": json.dumps(sd["param_groups"]), "scalars": json.dumps(scalars)}
    except TypeError as e:
        raise CheckpointError(f"optimizer state cannot be saved without pickle ({e})") from e
    return tensors, meta


def optimizer_from_tensors(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, str]
) -> None:
    """Load what :func:`optimizer_to_tensors` wrote back into ``opt``."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for key, value in json.loads(meta.get("scalars", "{}")).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    try:
        groups = json.loads(meta["param_groups"])
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"optimizer state does not fit the optimizer ({e})") from e


# --------------------------------------------------------------------------------------
# The run folder
# --------------------------------------------------------------------------------------


class RunFolder:
    """Reads and writes one run folder. Only a ``writer`` writes files: in distributed
    training every process holds one, and only rank 0's is a writer."""

    def __init__(self, path: str | Path, writer: bool = True):
        self.path, self.writer = Path(path), writer

    def file(self, name: str) -> Path:
        return self.path / name

    # ---- safety
    def check_no_pickles(self) -> None:
        """Refuse a run folder that holds pickle files: they are never opened."""
        if not self.path.is_dir():
            what = "is a file, not a run folder" if self.path.exists() else "does not exist"
            raise CheckpointError(f"run folder {self.path} {what}")
        found = sorted(p.name for p in self.path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if found:
            raise CheckpointError(
                f"run folder {self.path} holds pickle files ({', '.join(found)}); vaelab never "
                "loads pickles, refusing the folder"
            )

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the folder for this process (an exclusive flock on ``.lock``, which names the
        pid and host): another process that tries to train in it, or to finish its
        checkpoint, gets a CheckpointError naming the holder. Re-entrant within a process;
        the kernel releases it when the process ends, also by a kill. A folder it had to
        create is removed again if nothing but the lock was put in it (a run refused before
        it wrote anything leaves no trace). Where flock is missing or refused (Windows,
        some network file systems) the folder is used unguarded."""
        key = self.path.resolve()
        if not self.writer or fcntl is None or key in _HELD:
            yield
            return
        made = [d for d in (self.path, *self.path.parents) if not d.exists()]  # innermost first
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.file(LOCK), os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise CheckpointError(f"cannot write in run folder {self.path} ({e})") from e
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
                raise CheckpointError(
                    f"{self.path} is in use by another vaelab process (pid {holder}); wait for "
                    "it to finish or stop it, or choose another --out"
                ) from None
            except OSError:  # no locks on this file system: unguarded
                pass
            else:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()} on {socket.gethostname()}\n".encode())
                _HELD[key] = fd
                remove_stale_temporaries(self.path)  # a killed writer's; none is writing now
            yield
        finally:
            if locked_here := (_HELD.get(key) == fd):
                del _HELD[key]
            os.close(fd)  # releases the lock
            if made and locked_here and [f.name for f in self.path.iterdir()] == [LOCK]:
                self.file(LOCK).unlink()
                for d in made:  # the folders it created, innermost first, while empty
                    with contextlib.suppress(OSError):
                        d.rmdir()

    # ---- writing
    def write_config(self, cfg: Config) -> None:
        if self.writer:
            text = dumps(cfg).encode()
            atomic_write(self.file(CONFIG), lambda f: f.write(text))

    def append_metrics(self, record: dict[str, Any]) -> None:
        if self.writer:
            self.path.mkdir(parents=True, exist_ok=True)
            with open(self.file(METRICS), "a") as f:
                f.write(json.dumps(record) + "\n")

    def reset_metrics(self, upto_epoch: int = 0) -> None:
        """Rewrite ``metrics.jsonl`` atomically with only the records of epochs up to
        ``upto_epoch`` (those of the checkpoint a run resumes from; 0: none). A last line
        cut off by a kill is dropped with the other records after the checkpoint."""
        if self.writer:
            records = self.read_metrics(torn_tail=True) if upto_epoch else []
            kept = [m for m in records if m["epoch"] <= upto_epoch]
            text = "".join(json.dumps(m) + "\n" for m in kept).encode()
            atomic_write(self.file(METRICS), lambda f: f.write(text))

    def save_checkpoint(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        state: dict[str, Any],
        best: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Weights and optimizer (and ``best``, new best weights) as ``*.next`` files, then
        ``state.json`` with their hashes, then the renames into place (:meth:`_commit`): at
        every moment ``state.json`` describes complete files, under their final or their
        pending name. Best weights written earlier stay recorded."""
        if not self.writer:
            return
        hashes = {MODEL: write_tensors(self.file(MODEL + PENDING), model.state_dict())}
        if optimizer is not None:
            tensors, meta = optimizer_to_tensors(optimizer)
            hashes[OPTIMIZER] = write_tensors(self.file(OPTIMIZER + PENDING), tensors, meta)
        if best is not None:
            hashes[BEST] = write_tensors(self.file(BEST + PENDING), best)
        elif self.file(STATE).exists() and (kept := self._read_state().get("files", {}).get(BEST)):
            hashes[BEST] = kept
        text = json.dumps({**state, "files": hashes}, indent=1).encode()
        atomic_write(self.file(STATE), lambda f: f.write(text))
        self._commit([name for name in hashes if best is not None or name != BEST])

    def _commit(self, names: list[str]) -> None:
        """Move the pending tensor files ``names`` into place."""
        for name in names:
            os.replace(self.file(name + PENDING), self.file(name))

    def _roll_forward(self, state: dict[str, Any]) -> None:
        """Finish a checkpoint cut off between ``state.json`` and the renames: move pending
        files that ``state.json`` describes into place, delete those it does not."""
        files = state.get("files", {})
        for name in TENSOR_FILES:
            pending = self.file(name + PENDING)
            if not pending.exists():
                continue
            if sha256_file(pending) == files.get(name):
                self._commit([name])
            else:
                pending.unlink()

    # ---- reading
    def read_config(self) -> Config:
        self.check_no_pickles()
        if not self.file(CONFIG).exists():
            raise CheckpointError(f"{self.path} is not a vaelab run folder (no {CONFIG})")
        try:
            return load_config(self.file(CONFIG))
        except VaelabError as e:
            raise CheckpointError(f"{self.file(CONFIG)}: {e}") from e

    def read_state(self) -> dict[str, Any]:
        """``state.json``; a writer also finishes a checkpoint that was cut off."""
        self.check_no_pickles()
        state = self._read_state()
        pending = any(self.file(name + PENDING).exists() for name in TENSOR_FILES)
        if self.writer and pending:
            with self.held():  # never under a trainer that is mid-checkpoint
                state = self._read_state()  # as it stands now that no one else writes
                self._roll_forward(state)
        return state

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.file(STATE).read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise CheckpointError(
                f"{self.path} has no checkpoint yet (no {STATE}): it stopped before its first "
                "epoch ended; the command that started it starts it again (with --continue it "
                "also continues it later)"
            ) from e
        except ValueError as e:
            raise CheckpointError(f"{self.file(STATE)} is corrupt ({e})") from e
        if not isinstance(state, dict):
            raise CheckpointError(f"{self.file(STATE)} is corrupt (not a JSON object)")
        return state

    def read_metrics(self, torn_tail: bool = False) -> list[dict[str, Any]]:
        """The per-epoch records; ``torn_tail`` skips an unreadable last line (an append
        cut off by a kill) instead of refusing the file."""
        self.check_no_pickles()
        path = self.file(METRICS)
        if not path.exists():
            return []
        records = []
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                if torn_tail and not any(rest.strip() for rest in lines[number:]):
                    break
                raise CheckpointError(f"{path}, line {number}: not a JSON record ({e})") from e
            if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
                raise CheckpointError(f"{path}, line {number}: not a metrics record")
            records.append(record)
        return records

    def _verified(self, name: str, state: dict[str, Any]) -> tuple[dict, dict]:
        """The tensor file ``name`` that ``state.json`` describes: in place, or still pending
        when a checkpoint was cut off before its renames."""
        expected = state.get("files", {}).get(name)
        pending = self.file(name + PENDING)
        if pending.exists():
            with contextlib.suppress(CheckpointError):  # e.g. renamed meanwhile: use the other
                tensors, meta, digest = read_tensors(pending)
                if digest == expected:
                    return tensors, meta
        tensors, meta, digest = read_tensors(self.file(name))
        if expected != digest:
            raise CheckpointError(
                f"{self.file(name)} does not match the checkpoint's recorded sha256 "
                "(tampered with, or from another run); refusing it"
            )
        return tensors, meta

    def load_weights(
        self, model: torch.nn.Module, state: dict[str, Any] | None = None, name: str = MODEL
    ) -> None:
        """Verified weights ``name`` (the last epoch's, or :data:`BEST`) into ``model``."""
        state = self.read_state() if state is None else state
        tensors, _ = self._verified(name, state)
        try:
            model.load_state_dict(tensors)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[:2]
            raise CheckpointError(
                f"{self.file(name)} does not fit the model: {' '.join(first)}"
            ) from e

    def kept_weights(self, cfg: Config, state: dict[str, Any]) -> str:
        """The weights a trained run stands for: :data:`BEST` when it trained with
        ``train.keep_best`` (and has them), else the last epoch's."""
        return BEST if cfg.train.keep_best and BEST in state.get("files", {}) else MODEL

    def load_optimizer(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        tensors, meta = self._verified(OPTIMIZER, state)
        optimizer_from_tensors(optimizer, tensors, meta)

    # ---- stages fitted after training
    def stage_file(self, name: str) -> Path:
        return self.file(f"stage-{name}.safetensors")

    def save_stage(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        """Under the folder's lock: drop stage ``name`` from ``state.json``, write its
        tensors, then record their hash. A write cut off anywhere leaves either the old
        stage or none recorded (then it is fitted again), never a hash of another file."""
        if not self.writer:
            return
        with self.held():
            self._record_stage(name, None)
            self._record_stage(name, write_tensors(self.stage_file(name), tensors))

    def _record_stage(self, name: str, digest: str | None) -> None:
        state = self._read_state()
        stages = {k: v for k, v in state.get("stages", {}).items() if k != name}
        state["stages"] = stages if digest is None else {**stages, name: digest}
        text = json.dumps(state, indent=1).encode()
        atomic_write(self.file(STATE), lambda f: f.write(text))

    def load_stage(self, name: str, state: dict[str, Any]) -> dict[str, torch.Tensor] | None:
        """Stage ``name``'s tensors as ``state.json`` records them, None when it has none."""
        expected = state.get("stages", {}).get(name)
        if expected is None:
            return None
        if not self.stage_file(name).exists():
            raise CheckpointError(f"{self.stage_file(name)} is missing (`vaelab stage {self.path} "
                                  f"--redo` fits it again)")  # fmt: skip
        tensors, _, digest = read_tensors(self.stage_file(name))
        if digest != expected:
            raise CheckpointError(
                f"{self.stage_file(name)} does not match the sha256 recorded in state.json "
                "(tampered with, or from another run); refusing it (`vaelab stage "
                f"{self.path} --redo` fits it again)"
            )
        return tensors
