"""Does generated data help? Train the classifier on a small real MNIST subset, then on
that subset plus images a conditional VAE generated *from the same subset*, and compare
test accuracy over several seeds (issue: "Generating new labelled data").

    python benchmarks/augment.py [--real 1000] [--generated 10000] [--seeds 0 1 2]

Both arms take about the same number of optimizer steps (1,600, rounded to whole epochs:
1,632 and 1,548 with the defaults); the CVAE sees only the real subset, so no information
from the other 59,000 training images leaks into the augmented arm.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vaelab.config import load_config
from vaelab.data import ImageDataset, fetch, load_dataset, save_dataset
from vaelab.eval import evaluate_run
from vaelab.generate import generate
from vaelab.runs import load_run
from vaelab.train import train

ROOT = Path(__file__).parents[1]
CLASSIFIER = ROOT / "src" / "vaelab" / "classifier.toml"
STEPS = 1600  # optimizer steps of the classifier in both arms (to whole epochs)
BATCH = 64


def balanced_subset(data: ImageDataset, n: int, seed: int) -> ImageDataset:
    """n images, n/10 per class, drawn with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for k in range(10):
        idx = torch.nonzero(data.labels == k).flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[: n // 10]])
    return data.subset(torch.cat(picks))


def classifier_accuracy(name: str, n_train: int, seed: int, out: Path, cache: Path) -> float:
    epochs = max(1, round(STEPS * BATCH / n_train))
    cfg = load_config(CLASSIFIER, [f"train.epochs={epochs}", f"train.batch_size={BATCH}",
                                   f"train.seed={seed}", "train.checkpoint_every=1000"])  # fmt: skip
    cfg.data.name = name
    run = train(cfg, out, cache=cache, progress=False, log=lambda s: None)
    return evaluate_run(run, cache=cache, progress=False)["accuracy"]


def one_seed(seed: int, n_real: int, n_gen: int, work: Path, cache: Path) -> dict:
    mnist_train, mnist_test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    real = balanced_subset(mnist_train, n_real, seed)
    save_dataset(f"aug-real-{seed}", {"train": real, "test": mnist_test}, cache)
    # the generator: a CVAE trained on the real subset only
    cvae_cfg = load_config(ROOT / "configs" / "mnist_cvae.toml",
                           [f"data.name=\"aug-real-{seed}\"", "train.epochs=150",
                            f"train.seed={seed}", "train.checkpoint_every=1000"])  # fmt: skip
    cvae = train(cvae_cfg, work / f"cvae-{seed}", cache=cache, progress=False, log=lambda s: None)
    _, model = load_run(cvae)
    per = n_gen // 10
    fake = torch.cat([generate(model, per, [str(d)], seed=seed * 100 + d) for d in range(10)])
    fake_y = torch.arange(10).repeat_interleave(per)
    mixed = ImageDataset(
        torch.cat([real.images, fake]), torch.cat([real.labels, fake_y]), real.classes
    )
    save_dataset(f"aug-mix-{seed}", {"train": mixed, "test": mnist_test}, cache)
    return {
        "seed": seed,
        "real": classifier_accuracy(
            f"aug-real-{seed}", len(real), seed, work / f"clf-real-{seed}", cache
        ),
        "real+generated": classifier_accuracy(
            f"aug-mix-{seed}", len(mixed), seed, work / f"clf-mix-{seed}", cache
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=int, default=1000, help="real training images (1000)")
    parser.add_argument("--generated", type=int, default=10000, help="generated images (10000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    fetch("mnist")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vaelab-augment-") as tmp:
        work = Path(tmp)
        cache = work / "cache"
        (cache / "datasets").mkdir(parents=True)
        # the private cache needs MNIST too: link the user's copy
        from vaelab.data import cache_dir

        (cache / "datasets" / "mnist.npz").symlink_to(cache_dir() / "datasets" / "mnist.npz")
        rows = [one_seed(s, args.real, args.generated, work, cache) for s in args.seeds]
    for row in rows:
        print(json.dumps(row))
    for arm in ("real", "real+generated"):
        acc = [r[arm] for r in rows]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        print(
            f"{arm:<16} test accuracy {statistics.mean(acc):.4f} ± {sd:.4f} over seeds {args.seeds}"
        )
    print(f"wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
