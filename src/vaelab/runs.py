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
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from vaelab.config import Config, dumps, load_config
from vaelab.data import atomic_write
from vaelab.errors import CheckpointError, VaelabError

PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib"}
CONFIG, MODEL, OPTIMIZER, STATE, METRICS = (
    "config.toml",
    "model.safetensors",
    "optimizer.safetensors",
    "state.json",
    "metrics.jsonl",
)


# --------------------------------------------------------------------------------------
# safetensors with a clear refusal of anything else
# --------------------------------------------------------------------------------------


def check_safetensors_bytes(raw: bytes, where: Path) -> None:
    """Refuse bytes that are not a safetensors file (8-byte header length, then JSON)."""
    if raw[:1] == b"\x80" or raw[:2] == b"PK":
        raise CheckpointError(
            f"{where} is a pickle/torch.save file, not safetensors; refusing to load it"
        )
    if len(raw) < 10:
        raise CheckpointError(f"{where} is too short to be a safetensors file")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8 or raw[8:9] != b"{":
        raise CheckpointError(f"{where} is not a safetensors file (bad header)")


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str], str]:
    """(tensors, metadata, sha256) of a safetensors file, refusing anything else."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise CheckpointError(f"{path} is missing") from e
    check_safetensors_bytes(raw, path)
    try:
        tensors = st_load(raw)
        (n,) = struct.unpack("<Q", raw[:8])
        meta = json.loads(raw[8 : 8 + n]).get("__metadata__", {}) or {}
    except (SafetensorError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors file ({e})") from e
    return tensors, meta, hashlib.sha256(raw).hexdigest()


def write_tensors(
    path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str] | None = None
) -> str:
    """Write a safetensors file atomically; returns its sha256."""
    cpu = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    raw = st_save(cpu, metadata=meta)
    atomic_write(path, lambda f: f.write(raw))
    return hashlib.sha256(raw).hexdigest()


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


def encode_bytes(t: torch.Tensor) -> str:
    """A uint8 tensor (an RNG state) as base64 text for JSON."""
    return base64.b64encode(t.numpy().tobytes()).decode()


def decode_bytes(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


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
            raise CheckpointError(f"run folder {self.path} does not exist")
        found = sorted(p.name for p in self.path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if found:
            raise CheckpointError(
                f"run folder {self.path} holds pickle files ({', '.join(found)}); vaelab never "
                "loads pickles, refusing the folder"
            )

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

    def save_checkpoint(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, state: dict[str, Any]
    ) -> None:
        """Weights, optimizer and state, each written atomically; ``state.json`` last, with
        the hashes of the two tensor files, so it only ever describes complete files."""
        if not self.writer:
            return
        hashes = {MODEL: write_tensors(self.file(MODEL), model.state_dict())}
        if optimizer is not None:
            tensors, meta = optimizer_to_tensors(optimizer)
            hashes[OPTIMIZER] = write_tensors(self.file(OPTIMIZER), tensors, meta)
        text = json.dumps({**state, "files": hashes}, indent=1).encode()
        atomic_write(self.file(STATE), lambda f: f.write(text))

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
        self.check_no_pickles()
        try:
            return json.loads(self.file(STATE).read_text())
        except FileNotFoundError as e:
            raise CheckpointError(f"{self.path} has no checkpoint yet (no {STATE})") from e
        except ValueError as e:
            raise CheckpointError(f"{self.file(STATE)} is corrupt ({e})") from e

    def read_metrics(self) -> list[dict[str, Any]]:
        self.check_no_pickles()
        if not self.file(METRICS).exists():
            return []
        return [json.loads(line) for line in self.file(METRICS).read_text().splitlines() if line]

    def _verified(self, name: str, state: dict[str, Any]) -> tuple[dict, dict]:
        tensors, meta, digest = read_tensors(self.file(name))
        expected = state.get("files", {}).get(name)
        if expected != digest:
            raise CheckpointError(
                f"{self.file(name)} does not match the checkpoint's recorded sha256 "
                "(tampered with, or from another run); refusing it"
            )
        return tensors, meta

    def load_weights(self, model: torch.nn.Module, state: dict[str, Any] | None = None) -> None:
        state = self.read_state() if state is None else state
        tensors, _ = self._verified(MODEL, state)
        try:
            model.load_state_dict(tensors)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[:2]
            raise CheckpointError(
                f"{self.file(MODEL)} does not fit the model: {' '.join(first)}"
            ) from e

    def load_optimizer(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        tensors, meta = self._verified(OPTIMIZER, state)
        optimizer_from_tensors(optimizer, tensors, meta)


def load_run(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[Config, torch.nn.Module]:
    """The config and trained model of a run folder (in eval mode)."""
    from vaelab.models import build_model

    run = RunFolder(path, writer=False)
    cfg = run.read_config()
    model = build_model(cfg.model, cfg.train.loss)
    run.load_weights(model)
    return cfg, model.to(device).eval()


def finite_or_none(x: float) -> float | None:
    """JSON has no inf/nan: map them to null."""
    return x if math.isfinite(x) else None
