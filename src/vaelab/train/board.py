"""TensorBoard event files of a run (``train.tensorboard``): every metric term and the
learning rate per epoch, sample and reconstruction grids every ``train.tensorboard_images``
epochs, in ``RUN/tensorboard``. Writing them never touches the training's random streams
(images are drawn with a generator of their own), so a run trains to the same weights with
or without them; a resumed run drops the events after its checkpoint's epoch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from vaelab.errors import ConfigError

FOLDER = "tensorboard"


def summary_writer_class():
    """torch's SummaryWriter, or a one-line error naming the extra to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # torch raises this when the tensorboard package is missing
        raise ConfigError("train.tensorboard needs the tensorboard package: pip install "
                          "'vaelab[tensorboard]' (or pip install tensorboard)") from e  # fmt: skip
    return SummaryWriter


class Board:
    """The event writer of one run folder, from ``epoch`` on (events of later epochs that an
    earlier call wrote are dropped: they belong to epochs this run trains again)."""

    def __init__(self, run: Path, epoch: int, images_every: int):
        self.writer = summary_writer_class()(str(run / FOLDER), purge_step=epoch + 1)
        self.images_every = images_every

    def epoch(self, record: dict, lr: float, model, test: Callable[[], tuple]) -> None:
        """Scalars of one epoch's metrics ``record`` and, when due, image grids of ``model``
        (samples, and reconstructions of the test batch ``test()`` = (x (B, C, H, W), labels),
        fetched only then)."""
        step = record["epoch"]
        self.writer.add_scalar("loss/train", record["train_loss"], step)
        if record.get("test_loss") is not None:
            self.writer.add_scalar("loss/test", record["test_loss"], step)
        for name, value in record.get("test_terms", {}).items():
            self.writer.add_scalar(f"test/{name}", value, step)
        self.writer.add_scalar("lr", lr, step)
        self.writer.add_scalar("seconds", record["seconds"], step)
        if self.images_every and step % self.images_every == 0:
            self._images(model, test(), step)
        self.writer.flush()

    @torch.no_grad()
    def _images(self, model, test: tuple | None, step: int) -> None:
        from vaelab.thesis.images import make_grid

        was_training = model.training
        model.eval()
        try:
            if model.can("sample"):
                g = torch.Generator().manual_seed(0)  # the same draws every time: progress shows
                pictures = model.sample(32, generator=g)  # (32, C, H, W) in [0, 1]
                self.writer.add_image("samples", make_grid(pictures.cpu(), 8, 1), step,
                                      dataformats="HWC")  # fmt: skip
            if test is not None and model.can("encode") and model.can("decode"):
                x, y = test
                c = model.condition(y)
                both = torch.cat([x, model.reconstruct(x, c)])  # (2B, C, H, W)
                self.writer.add_image("reconstructions", make_grid(both.cpu(), len(x), 1), step,
                                      dataformats="HWC")  # fmt: skip
        finally:
            model.train(was_training)

    def close(self) -> None:
        self.writer.close()
