"""Training on several processes with PyTorch's own engine: ``torch.distributed`` and
DistributedDataParallel, started by ``torchrun`` (gloo on CPUs, NCCL on GPUs).

Which process this is comes from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``); without it training is one process (:data:`SINGLE`) and none of this runs.
Rank 0 alone reads and writes the run folder: what the others need of it (the state of a
checkpoint and its tensor files) is sent to them as bytes, so no shared file system is
assumed. Small helpers here wrap the few collectives the trainer uses.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from vaelab.config import Config, dumps
from vaelab.data.batches import derive_seed
from vaelab.data.dataset import ImageDataset
from vaelab.errors import ConfigError
from vaelab.runs.folder import RunFolder


@dataclass(frozen=True)
class Dist:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def on(self) -> bool:
        """Whether training runs on several processes."""
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes, prints and shows the progress bar."""
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's rows of a batch of ``n``: consecutive, as even as they come."""
        return slice(n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size)


SINGLE = Dist()
"""One process: rank 0 of 1."""

_CPU_GROUP: list = []  # a gloo group for byte collectives when the default backend is NCCL


def from_env() -> Dist:
    """torchrun's place for this process, or :data:`SINGLE` outside torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return SINGLE
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as e:
        raise ConfigError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({e})") from e
    return Dist(rank, world, local)


def start(d: Dist, device: str) -> str:
    """Join the process group (NCCL for CUDA, else gloo); returns the device this rank
    trains on (``cuda`` becomes ``cuda:LOCAL_RANK``)."""
    if not d.on:
        return device
    cuda = device.startswith("cuda")
    if not dist.is_initialized():
        # torchrun's store, its keys prefixed by the restart: workers restarted after a
        # failure must not read the addresses their dead predecessors published
        store, rank, world = next(dist.rendezvous("env://"))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.PrefixStore(f"vaelab/attempt-{attempt}", store)
        dist.init_process_group("nccl" if cuda else "gloo", store=store, rank=rank,
                                world_size=world)  # fmt: skip
        _CPU_GROUP[:] = [dist.new_group(backend="gloo")] if cuda else [None]
    return f"cuda:{d.local_rank}" if device == "cuda" else device


def stop(d: Dist, ok: bool = True) -> None:
    """Leave the process group: after a barrier when this rank's work went well; at once
    after an error, so the process exits and torchrun ends the others (they may be waiting
    in another collective, where a barrier would hang until the group's timeout)."""
    if d.on and dist.is_initialized() and ok:
        dist.barrier(group=_group())  # every rank is done with the others before any leaves
        dist.destroy_process_group()
        _CPU_GROUP.clear()


def _group():
    return _CPU_GROUP[0] if _CPU_GROUP else None


def all_sum(d: Dist, t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over the ranks (a new tensor; ``t`` itself for one process)."""
    if not d.on:
        return t
    total = t.detach().clone()
    dist.all_reduce(total, group=_group() if total.device.type == "cpu" else None)
    return total


def any_rank(d: Dist, flag: bool) -> bool:
    """Whether ``flag`` holds on any rank (every rank gets the same answer)."""
    if not d.on:
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_group())
    return bool(t.item())


def broadcast_bytes(d: Dist, data: bytes | None) -> bytes:
    """Rank 0's ``data`` on every rank (the others pass None)."""
    if not d.on:
        return data or b""
    n = torch.tensor([len(data) if d.main and data is not None else 0], dtype=torch.int64)
    dist.broadcast(n, 0, group=_group())
    buf = (torch.frombuffer(bytearray(data), dtype=torch.uint8) if d.main and n.item()
           else torch.empty(int(n.item()), dtype=torch.uint8))  # fmt: skip
    if n.item():
        dist.broadcast(buf, 0, group=_group())
    return buf.numpy().tobytes()


def gather_bytes(d: Dist, data: bytes) -> list[bytes]:
    """Every rank's ``data``, in rank order, on every rank."""
    if not d.on:
        return [data]
    n = torch.tensor([len(data)], dtype=torch.int64)
    sizes = [torch.zeros_like(n) for _ in range(d.world_size)]
    dist.all_gather(sizes, n, group=_group())
    top = max(int(s.item()) for s in sizes)
    mine = torch.zeros(top, dtype=torch.uint8)
    mine[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else mine[:0]
    bufs = [torch.empty(top, dtype=torch.uint8) for _ in range(d.world_size)]
    dist.all_gather(bufs, mine, group=_group())
    return [b[: int(s.item())].numpy().tobytes() for b, s in zip(bufs, sizes, strict=True)]


def agree(d: Dist, what: str, text: str) -> None:
    """A ConfigError on every rank unless all ranks hold the same ``text`` (a config, a
    data set's hash): checked once at the start, before anything trains."""
    if not d.on:
        return
    digests = gather_bytes(d, hashlib.sha256(text.encode()).hexdigest().encode())
    differ = [r for r, h in enumerate(digests) if h != digests[0]]
    if differ:
        raise ConfigError(f"the {d.world_size} processes disagree on {what}: ranks "
                          f"{', '.join(map(str, differ))} differ from rank 0 (same command, "
                          "config and data set on every machine?)")  # fmt: skip


# ---- what the ranks exchange about a checkpoint


CHECKPOINT_FILES = ("state.json", "model.safetensors", "optimizer.safetensors")


def checkpoint_copy(d: Dist, run: RunFolder) -> tuple[RunFolder, Path | None]:
    """The checkpoint to resume from, as this rank can read it: rank 0's own folder; on the
    other ranks a private copy of its files sent by rank 0 (no shared file system assumed),
    in a temporary folder the caller removes. Returns (folder, temporary folder or None)."""
    if not d.on:
        return run, None
    if d.main:
        run.read_state()  # finishes a cut-off checkpoint, so the files are in place
    tmp = None if d.main else Path(tempfile.mkdtemp(prefix="vaelab-rank-"))
    for name in CHECKPOINT_FILES:
        data = run.file(name).read_bytes() if d.main else None
        data = broadcast_bytes(d, data)
        if tmp is not None:
            (tmp / name).write_bytes(data)
    return (run, None) if d.main else (RunFolder(tmp, writer=False), tmp)


def rank_rng_states(d: Dist, device: torch.device) -> dict[str, list[str]]:
    """Every rank's RNG states (torch's, and the GPU's on CUDA), gathered in rank order, as
    base64 text for ``state.json``."""
    states = {"torch": gather_bytes(d, torch.get_rng_state().numpy().tobytes())}
    if device.type == "cuda":
        states["cuda"] = gather_bytes(d, torch.cuda.get_rng_state(device).numpy().tobytes())
    return {k: [base64.b64encode(s).decode() for s in v] for k, v in states.items()}


def restore_rank_rng(d: Dist, ranks: dict | None, device, log, seed: int, step: int) -> None:
    """Give this rank its own RNG states back, when the checkpoint was written by as many
    processes; otherwise seed a fresh stream per rank from the run's seed and the step (the
    run goes on from the same epoch and batch, not bit for bit)."""
    if not ranks or len(ranks.get("torch", [])) != d.world_size:
        written = len(ranks["torch"]) if ranks else 1
        log(f"note: the checkpoint was written by {written} process(es), this run has "
            f"{d.world_size}: it continues from the same epoch and batch, not bit for bit")  # fmt: skip
        if d.on:  # else every rank would go on with rank 0's restored stream
            torch.manual_seed(derive_seed(seed, f"torch:rank{d.rank}:step{step}"))
        return
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(ranks["torch"][d.rank])),
                                         dtype=torch.uint8))  # fmt: skip
    if "cuda" in ranks and device.type == "cuda":
        state = torch.frombuffer(
            bytearray(base64.b64decode(ranks["cuda"][d.rank])), dtype=torch.uint8
        )
        torch.cuda.set_rng_state(state, device)


def reduce_terms(d: Dist, totals: dict[str, torch.Tensor], n: int) -> dict[str, float]:
    """Means over all ranks of per-rank sums of the objective's terms over n examples."""
    keys = sorted(totals)
    packed = torch.stack([torch.tensor(float(n), dtype=torch.float64), *(totals[k] for k in keys)])
    packed = all_sum(d, packed)
    return {k: float(v) / float(packed[0]) for k, v in zip(keys, packed[1:], strict=True)}


def check_processes(
    dist: Dist, cfg: Config, train_set: ImageDataset, test_set: ImageDataset, models: int
) -> None:
    """Refusals before anything trains on several processes, the same on every rank."""
    if models > 1:
        raise ConfigError("fused runs cannot train on several processes: train them one by one")
    from vaelab.models.registry import family

    if not family(cfg.model).distributable:
        raise ConfigError(f"model.kind = {cfg.model.kind!r} cannot train on several processes "
                          "(its codebook learns outside the gradients): train it on one")  # fmt: skip
    if cfg.train.batch_size % dist.world_size:
        raise ConfigError(f"train.batch_size = {cfg.train.batch_size} (the global batch) is not "
                          f"divisible by the {dist.world_size} processes")  # fmt: skip
    if 0 < (last := len(train_set) % cfg.train.batch_size) < dist.world_size:
        raise ConfigError(f"the last batch of an epoch has {last} of {len(train_set)} images, "
                          f"too few for {dist.world_size} processes: change data.limit or "
                          "train.batch_size")  # fmt: skip
    agree(dist, "the config", dumps(cfg))
    data = hashlib.sha256()
    for split in (train_set, test_set):
        data.update(split.images.numpy().tobytes())
        data.update(b"" if split.labels is None else split.labels.numpy().tobytes())
    agree(dist, f"the data set {cfg.data.name!r}", data.hexdigest())
