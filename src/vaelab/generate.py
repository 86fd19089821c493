"""Generating new labelled data.

- :func:`load_generator`: any run folder as a generator (a model that can sample: a VAE
  samples its prior; an autoencoder the Gaussian fitted to its codes after training).
- :func:`generate`: N images as uint8, in batches.
- :func:`export`: N images per label written as PNG folders, ``.npz`` or IDX files that
  ``vaelab data import-*`` reads back.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from vaelab.data.idx import write_idx
from vaelab.errors import VaelabError
from vaelab.files import atomic_write
from vaelab.memory import check_memory
from vaelab.runs import RunFolder, load_run, run_stages
from vaelab.thesis.images import quantize, save_png


def load_generator(run_dir: str | Path, cache=None, fit_images: int | None = None):
    """(config, model) of a run, ready to ``sample``. A model whose prior comes from a stage
    (an autoencoder's ex-post Gaussian) that its folder lacks — trained before stages
    existed — gets it fitted now, in memory (``vaelab stage RUN`` writes it); with
    ``fit_images`` its stages are fitted anew, in memory, to that many training images."""
    cfg, model = load_run(run_dir)
    if model.stages and (fit_images is not None or not model.can("sample")):
        run_stages(RunFolder(run_dir, writer=False), cfg, model, cache, log=lambda line: None,
                   redo=fit_images is not None, limit=fit_images)  # fmt: skip
    if not model.can("sample"):
        raise VaelabError(f"{run_dir} holds a {cfg.model.kind}, which cannot generate images")
    return cfg, model


@torch.no_grad()
def generate(
    model,
    n: int,
    labels: list[str] | None = None,
    seed: int = 0,
    batch: int = 1000,
    temperature: float = 1.0,
) -> torch.Tensor:
    """``n`` generated images (n, C, H, W) as uint8 (Lemma 1.3.6), in batches; ``labels``:
    one for all or one per image; ``temperature`` scales the prior's standard deviation
    (1 = the model's prior)."""
    if n < 1:
        raise VaelabError(f"cannot generate {n} images")
    if labels is not None and len(labels) not in (1, n):
        raise VaelabError(f"{len(labels)} labels for {n} images: give one, or one per image")
    g = torch.Generator().manual_seed(seed)
    out = []
    bar = tqdm(total=n, desc="generating", unit="img", leave=False,
               disable=None if n > 20 * batch else True)  # fmt: skip
    for start in range(0, n, batch):
        m = min(batch, n - start)
        names = (
            None
            if labels is None
            else (labels * m if len(labels) == 1 else labels[start : start + m])
        )
        out.append(quantize(model.sample(m, names, generator=g, temperature=temperature).cpu()))
        if start == 0:
            check_memory(n, out[0][0].numel())
        bar.update(m)
    bar.close()
    return torch.cat(out)


FORMATS = ("png", "npz", "idx")


def _check_names(names: list[str], fmt: str) -> None:
    """Class names come from a data set's files: as png folder names they must not be paths
    (``..``, ``a/b``), and classes.txt (idx) holds one name per line."""
    if fmt == "png":
        bad = [nm for nm in names if nm in (".", "..") or any(ch in nm for ch in "/\\\0")]
        if bad:
            raise VaelabError(f"class names {bad} cannot be folder names (use --format npz)")
    if fmt == "idx" and any("\n" in nm or "\r" in nm for nm in names):
        raise VaelabError("classes.txt holds one name per line: a class name with a line break "
                          "cannot be written (use --format npz)")  # fmt: skip


def export(
    model,
    out: str | Path,
    per_label: int,
    labels: list[str] | None,
    fmt: str = "png",
    seed: int = 0,
    temperature: float = 1.0,
) -> Path:
    """Write ``per_label`` images for each label (all of the model's classes when ``labels``
    is None; unconditional models: ``per_label`` unlabelled images) to ``out``.

    png: ``out/<label>/<i>.png`` (an image folder for ``vaelab data import-folder``);
    npz: ``out/generated.npz`` with images (N, H, W, C), labels and classes;
    idx: ``out/images-idx3-ubyte.gz`` and ``out/labels-idx1-ubyte.gz`` (labels index
    ``out/classes.txt``)."""
    if fmt not in FORMATS:
        raise VaelabError(f"--format must be one of {', '.join(FORMATS)}")
    out = Path(out)
    conditional = bool(getattr(model, "classes", None))
    names = (labels or list(model.classes)) if conditional else [""]
    if labels and not conditional:
        raise VaelabError("--labels need a conditional model")
    _check_names(names, fmt)
    if out.exists() and any(out.iterdir()):  # old images would mix with the new ones
        raise VaelabError(f"{out} is not empty; export into a new folder")
    # one stream for all labels: per-label seeds seed + i would give label i+1 of one export
    # the draws of label i of the export with the next seed
    probe = model.sample(1, names[:1] if conditional else None, generator=torch.Generator(),
                         temperature=temperature)  # fmt: skip
    check_memory(per_label * len(names), probe[0].numel())  # before the list of labels
    wanted = [nm for nm in names for _ in range(per_label)] if conditional else None
    images = generate(model, per_label * len(names), wanted, seed, temperature=temperature)
    y = np.repeat(np.arange(len(names)), per_label)
    hwc = images.permute(0, 2, 3, 1).numpy()  # (N, C, H, W) -> (N, H, W, C)
    return write_folder(out, hwc, y, names, fmt, conditional)


def write_folder(out: Path, hwc: np.ndarray, y: np.ndarray, names: list[str], fmt: str,
                 labelled: bool, stem: str = "generated") -> Path:  # fmt: skip
    """Images (N, H, W, C) uint8 with label indices ``y`` into names, as ``fmt`` files in
    folder ``out`` (png: out/<label>/<i>.png; npz: out/STEM.npz; idx: two IDX files and
    classes.txt). Written into a hidden folder beside ``out`` and renamed to ``out`` only
    when complete: a full disk or a kill leaves no folder of complete-looking files for
    import-folder to take."""
    if fmt not in FORMATS:
        raise VaelabError(f"--format must be one of {', '.join(FORMATS)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise VaelabError(f"{out} is not an empty folder; write into a new one")
    _check_names(names, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        _write(partial, hwc, y, names, fmt, labelled, stem)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(partial, 0o777 & ~umask)  # mkdtemp's 0o700 -> what mkdir would give
        os.replace(partial, out)  # onto a missing or empty folder
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out


def _write(out: Path, hwc: np.ndarray, y: np.ndarray, names: list[str], fmt: str,
           conditional: bool, stem: str) -> None:  # fmt: skip
    """The files of :func:`write_folder` in folder ``out``."""
    if fmt == "png":
        pairs = tqdm(zip(hwc, y, strict=True), total=len(y), desc="writing PNGs", unit="img",
                     leave=False, disable=None if len(y) > 2000 else True)  # fmt: skip
        for i, (img, k) in enumerate(pairs):
            save_png(out / (names[k] or "unlabelled") / f"{i:06d}.png", img)
    elif fmt == "npz":
        arrays = {"images": hwc}
        if conditional:
            arrays |= {"labels": y, "classes": np.array(names)}
        atomic_write(out / f"{stem}.npz", lambda f: np.savez_compressed(f, **arrays))
    else:
        write_idx(out / "images-idx3-ubyte.gz", hwc[..., 0] if hwc.shape[-1] == 1 else hwc)
        if conditional:
            write_idx(
                out / "labels-idx1-ubyte.gz", y.astype(np.uint8 if len(names) <= 256 else np.int32)
            )
            text = ("\n".join(names) + "\n").encode()
            atomic_write(out / "classes.txt", lambda f: f.write(text))
