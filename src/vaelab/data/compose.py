"""Composed multi-digit images (thesis §2.3: composing MNIST digits to make new data).

Each composite places ``digits`` source digits side by side on a 28 x (28·digits) canvas,
each scaled and shifted by a seeded random amount; its label is the digit string ("427").
All numbers with that many digits are classes ("000" … "999"), so train and test share
one class list; numbers held out of the training split appear only in the test split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vaelab.data.cache import available_datasets, load_dataset, save_dataset, writing
from vaelab.data.dataset import ImageDataset
from vaelab.errors import DataError
from vaelab.memory import check_memory
from vaelab.thesis.images import normalize, quantize


def number_classes(digits: int) -> list[str]:
    """All digit strings of length ``digits``: '00', '01', … '99' for 2."""
    return [str(i).zfill(digits) for i in range(10**digits)]


def check_digits(digits: int) -> None:
    """Composites have 1 to 6 digits (10**6 classes at most): refused before any work."""
    if not 1 <= digits <= 6:
        raise DataError(f"--digits must be between 1 and 6, got {digits}")


def default_holdout(digits: int, seed: int, count: int = 10) -> list[str]:
    """``count`` numbers drawn with ``seed``, to be held out of the training split."""
    check_digits(digits)  # before 10**digits is allocated (--digits 9: 8 GB)
    if digits < 2:
        return []
    g = torch.Generator().manual_seed(seed + 7919)
    picks = torch.randperm(10**digits, generator=g)[:count].sort().values
    return [str(int(i)).zfill(digits) for i in picks]


def compose_digits(
    source: ImageDataset,
    digits: int,
    n: int,
    seed: int,
    holdout: list[str] | None = None,
    scale: tuple[float, float] = (0.75, 1.0),
    jitter: float = 2.0,
    name: str = "",
) -> ImageDataset:
    """``n`` composites of ``digits`` digits from a labelled single-digit ``source``.

    Labels are drawn uniformly from the numbers not in ``holdout``; each slot takes a
    random source image of its digit, scaled by s ~ U(scale) and shifted by up to
    ``jitter`` pixels in x and y (bilinear resampling), so composites are reproducible
    from ``seed``."""
    if source.labels is None or source.image_shape[0] != 1:
        raise DataError("composing needs a labelled single-channel digit data set such as mnist")
    check_digits(digits)
    if n < 1:
        raise DataError(f"the number of composites must be >= 1, got {n}")
    h, w = source.image_shape[1:]
    # per composite: its tiles placed and the canvas (uint8), and ~64 bytes of draws per tile
    check_memory(n, digits * (2 * h * w + 64), "composites", copies=1)
    g = torch.Generator().manual_seed(seed)
    classes = number_classes(digits)
    allowed = torch.ones(len(classes), dtype=torch.bool)
    known = set(classes)
    for number in holdout or []:
        if number not in known:
            raise DataError(f"held-out number {number!r} is not a {digits}-digit string")
        allowed[int(number)] = False
    pool = torch.nonzero(allowed).flatten()
    if len(pool) == 0:
        raise DataError(f"the held-out numbers cover every {digits}-digit number: none is left")
    numbers = pool[torch.randint(len(pool), (n,), generator=g)]  # (n,) class = the number
    places = 10 ** torch.arange(digits - 1, -1, -1)  # (digits,) 100, 10, 1
    slot_digits = (numbers[:, None] // places) % 10  # (n, digits) digit in each slot

    # digits by class name, not by label index: a source's classes need not be "0"…"9" in order
    names = list(source.classes or []) if source.labels is not None else []
    if missing := [str(d) for d in range(10) if str(d) not in names]:
        raise DataError(f"the source data set has no class {', '.join(map(repr, missing))}: "
                        "composites need labelled digits 0-9")  # fmt: skip
    by_digit = [torch.nonzero(source.labels == names.index(str(d))).flatten() for d in range(10)]
    if any(len(ix) == 0 for ix in by_digit):
        raise DataError("the source data set lacks some digit 0-9")
    pick = torch.empty_like(slot_digits)
    for d in range(10):
        mask = slot_digits == d
        ix = by_digit[d]
        pick[mask] = ix[torch.randint(len(ix), (int(mask.sum()),), generator=g)]

    tiles = pick.flatten()  # (n·digits,) source image of each tile
    m = len(tiles)
    s = scale[0] + (scale[1] - scale[0]) * torch.rand(m, generator=g)  # (m,)
    shift = (torch.rand(m, 2, generator=g) * 2 - 1) * jitter  # (m, 2) pixels
    theta = torch.zeros(m, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / s  # sampling grid: zoom out by s
    theta[:, 0, 2] = -shift[:, 0] * 2 / w / s
    theta[:, 1, 2] = -shift[:, 1] * 2 / h / s
    placed = torch.empty(m, 1, h, w, dtype=torch.uint8)
    for i in range(0, m, _TILES_PER_CHUNK):  # float tiles and grids of all 180k: about 3 GB
        j = slice(i, i + _TILES_PER_CHUNK)
        x = normalize(source.images[tiles[j]])  # (c, 1, H, W)
        grid = F.affine_grid(theta[j], [len(x), 1, h, w], align_corners=False)
        placed[j] = quantize(F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                                           align_corners=False))  # fmt: skip
    canvas = placed.reshape(n, digits, 1, h, w).permute(0, 2, 3, 1, 4).reshape(n, 1, h, digits * w)
    return ImageDataset(canvas.contiguous(), numbers.to(torch.int64), classes, name)


_TILES_PER_CHUNK = 8192
"""Digit tiles placed at a time: bounds compose's memory (about 150 MB for MNIST tiles)."""


def compose_dataset(
    name: str,
    source: str = "mnist",
    digits: int = 3,
    n: int = 60000,
    n_test: int | None = None,
    seed: int = 0,
    holdout: list[str] | None = None,
    cache=None,
    replace: bool = False,
):
    """Build and cache data set ``name``: train composites from the source's train split
    (without ``holdout``), test composites from its test split (all numbers). An existing
    data set of that name is replaced only with ``replace``, and never the source itself."""
    if name == source:
        raise DataError(f"--name {name!r} would overwrite the source data set; choose another")
    with writing(name, cache):  # a second compose of that name waits, then is refused
        if name in available_datasets(cache) and not replace:
            raise DataError(
                f"data set {name!r} already exists; use --force to replace it, or another --name"
            )
        if holdout is None:
            holdout = default_holdout(digits, seed)
        n_test = max(1, n // 6) if n_test is None else n_test
        train = compose_digits(
            load_dataset(source, "train", cache), digits, n, seed, holdout, name=name
        )
        test = compose_digits(
            load_dataset(source, "test", cache), digits, n_test, seed + 1, [], name=name
        )
        return save_dataset(
            name,
            {"train": train, "test": test},
            cache,
            source=f"compose --source {source} --digits {digits} --n {n} --seed {seed}",
            extra={"holdout": holdout, "digits": digits},
        )
