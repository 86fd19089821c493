"""Where training stands: the progress saved in ``state.json`` with every RNG state a
resumed run needs, read back exactly; whether a run has finished."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import vaelab
from vaelab.config import FILLED_IN, RESUME_OVERRIDES, Config, differences, from_dict
from vaelab.data.batches import Batches
from vaelab.errors import CheckpointError, VaelabError
from vaelab.files import decode_bytes, encode_bytes, finite_or_none
from vaelab.runs.folder import RunFolder


@dataclass
class Progress:
    """Where training stands; saved in ``state.json`` (with RNG states) at each checkpoint."""

    epoch: int = 0  # completed epochs
    batch: int = 0  # batches done in the current, unfinished epoch
    step: int = 0  # optimisation steps so far
    train_sum: float = 0.0  # sum of per-example losses in the current epoch
    best: float = math.inf  # best test loss so far
    stale: int = 0  # epochs since the best test loss (early stopping)
    stopped: bool = False  # early stopping ended the run
    seconds: float = 0.0  # training wall time so far
    last_train: float = math.nan  # the training loss of the last epoch
    flat: int = 0  # epochs in a row whose training loss equalled the one before (saturation)


LATER = {"stopped": False, "last_train": math.nan, "flat": 0}
"""Progress fields that older checkpoints lack, with the value they stand for."""


def stretched_schedule(old: Config, new: Config) -> str | None:
    """A warning when a run continues with other epochs under a decaying learning rate."""
    if new.train.epochs == old.train.epochs or old.train.lr_decay == 1:
        return None
    return (f"warning: train.epochs {old.train.epochs} -> {new.train.epochs} with "
            f"train.lr_decay = {old.train.lr_decay} stretches the learning-rate schedule over "
            "the new length")  # fmt: skip


def read_progress(run: RunFolder) -> dict:
    """``state.json`` of ``run``, whose progress counts (read before the checkpoint is
    restored) must be integers: a missing one is a CheckpointError, not a KeyError."""
    state = run.read_state()
    if bad := [k for k in ("epoch", "batch", "stale") if not isinstance(state.get(k), int)]:
        raise CheckpointError(f"{run.file('state.json')} is incomplete ({', '.join(bad)})")
    return state


def check_config(state: dict, cfg: Config, where: Path, log: Callable[[str], None]) -> None:
    """A run continues only under the config its checkpoint was written with (recorded in
    ``state.json``), up to the keys that may change on resume: an edited ``config.toml`` is
    refused naming the keys. A checkpoint from before configs were recorded is trusted with
    one warning; its next checkpoint records the config."""
    stored = state.get("config")
    if stored is None:
        log(f"warning: {where} was written before checkpoints recorded their config; its "
            "config.toml is trusted as it is and recorded at the next checkpoint")  # fmt: skip
        return
    try:
        old = from_dict(stored)
    except VaelabError as e:
        raise CheckpointError(f"{where}/state.json: its recorded config is corrupt ({e})") from e
    if changed := differences(old, cfg, RESUME_OVERRIDES + FILLED_IN):
        raise CheckpointError(
            f"{where}: the config differs from the one its checkpoint was written with "
            f"({'; '.join(changed)}); an edited config.toml is never trained on: on resume only "
            f"{', '.join(k.split('.', 1)[1] for k in RESUME_OVERRIDES)} may change, with --set"
        )


def finished(cfg: Config, state: dict) -> bool:
    """Whether a run with ``state`` has ended: all epochs done, or stopped early (and the
    patience in ``cfg`` would stop it too). A state written before ``stopped`` existed
    was tested at every epoch, where a stale count past the patience means it stopped."""
    patience = cfg.train.early_stopping
    stopped = patience and state["stale"] >= patience and state.get("stopped", True)
    return state["epoch"] >= cfg.train.epochs or bool(stopped)


def checkpoint_state(p: Progress, batches: Batches, mid_epoch: bool) -> dict:
    """Progress and every RNG state a resumed run needs to draw the same numbers."""
    loader = batches.state_dict(mid_epoch=mid_epoch)
    device = batches.device
    rng = {
        "device": device.type,
        "torch": encode_bytes(torch.get_rng_state()),
        "generator": encode_bytes(loader["generator"]),
        "noise": encode_bytes(loader["noise"].cpu()),
    }
    if device.type == "cuda":
        rng["cuda"] = encode_bytes(torch.cuda.get_rng_state(device))
    return {
        **{k: finite_or_none(v) if isinstance(v, float) else v for k, v in vars(p).items()},
        "rng": rng,
        "written_by": {
            "vaelab": vaelab.__version__,
            "torch": torch.__version__,
            "device": str(device),
        },  # fmt: skip
    }


def restore(
    run: RunFolder, model, optimizer, batches: Batches, log: Callable[[str], None]
) -> Progress:
    """Load a checkpoint's weights, optimizer, RNG states and progress."""
    state = run.read_state()
    run.load_weights(model, state)
    run.load_optimizer(optimizer, state)
    device = batches.device
    try:
        rng = state["rng"]
        torch.set_rng_state(decode_bytes(rng["torch"]))
        loader = {"generator": decode_bytes(rng["generator"]), "noise": batches.noise.get_state()}
        if rng.get("device", "cpu") == device.type:
            loader["noise"] = decode_bytes(rng["noise"])
            if "cuda" in rng:
                torch.cuda.set_rng_state(decode_bytes(rng["cuda"]), device)
        else:
            log(f"note: the checkpoint ran on {rng.get('device', 'cpu')}, this run on "
                f"{device.type}; random draws on the device will differ from an unbroken run")  # fmt: skip
        batches.load_state_dict(loader)
        fields = {k: state[k] for k in vars(Progress()) if k not in LATER}
        for k, default in LATER.items():  # absent in older checkpoints
            value = state.get(k)
            fields[k] = default if value is None else type(default)(value)
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{run.file('state.json')} is incomplete ({e})") from e
    fields["best"] = math.inf if fields["best"] is None else fields["best"]
    return Progress(**fields)
