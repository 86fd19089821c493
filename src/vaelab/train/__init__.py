"""Training: the loop (:mod:`.loop`), one optimisation step (:mod:`.step`), the progress a
checkpoint saves (:mod:`.state`), setup of data and models (:mod:`.setup`), fused models
(:mod:`.fused`) and groups of runs (:mod:`.groups`)."""

from vaelab.train.loop import TrainingDiverged, TrainingInterrupted, train, train_runs

__all__ = ["train", "train_runs", "TrainingDiverged", "TrainingInterrupted"]
