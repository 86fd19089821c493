"""Train pythae's VAE for the peer row of `make bench`; runs inside the bench's own pythae
virtual environment (benchmarks/peer.py makes it), never in vaelab's.

    python pythae_driver.py TRAIN.npy EVAL.npy EPOCHS OUT_DIR

Settings are the issue's, the same as vaelab's side of the row: pythae's default MLP
networks for 1x28x28 (784-512-z, z-512-784), latent 20, BCE, Adam 1e-3, batch 128 for
training and evaluation, no checkpoints but the final model pythae always saves. Prints one
JSON line: the seconds at the end of every epoch (after its evaluation) since training began.
"""

import json
import sys
import time

import numpy as np
from pythae.models import VAE, VAEConfig
from pythae.pipelines import TrainingPipeline
from pythae.trainers import BaseTrainerConfig
from pythae.trainers.training_callbacks import TrainingCallback


class EpochClock(TrainingCallback):
    """The time at the end of each epoch, after pythae's evaluation and best-model copy."""

    def __init__(self):
        self.t0, self.ends = None, []

    def on_train_begin(self, training_config, **kwargs):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, training_config, **kwargs):
        self.ends.append(time.perf_counter() - self.t0)


def main() -> None:
    train_path, eval_path, epochs, out = sys.argv[1:5]
    train, valid = np.load(train_path), np.load(eval_path)  # (N, 1, 28, 28) float32 in [0, 1]
    model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=20, reconstruction_loss="bce"))
    config = BaseTrainerConfig(output_dir=out, num_epochs=int(epochs), learning_rate=1e-3,
                               per_device_train_batch_size=128, per_device_eval_batch_size=128,
                               optimizer_cls="Adam", steps_saving=None, no_cuda=True)  # fmt: skip
    clock = EpochClock()
    TrainingPipeline(model=model, training_config=config)(
        train_data=train, eval_data=valid, callbacks=[clock]
    )
    print(json.dumps({"epoch_ends": clock.ends}))


if __name__ == "__main__":
    main()
