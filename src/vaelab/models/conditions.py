"""Condition vectors of a conditional model: class names coded as one-hots, digit strings
digit by digit (so a model can be asked for numbers it never saw whole)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def condition_table(classes: list[str]) -> torch.Tensor:
    """Condition vectors (K, D) for class names. When every name is a digit string of one
    length L ("7", "427"), a name is coded digit by digit as L one-hots (D = 10·L), so a
    conditional model can be asked for numbers it never saw whole; otherwise it is a
    one-hot of the class (D = K)."""
    if digitwise(classes):
        return torch.stack([digit_code(c) for c in classes])
    return torch.eye(len(classes))


def digitwise(classes: list[str]) -> bool:
    """Whether class names are coded digit by digit: all digit strings of one length."""
    return (
        bool(classes)
        and len({len(c) for c in classes}) == 1
        and all(c.isascii() and c.isdigit() for c in classes)
    )


def digit_code(name: str) -> torch.Tensor:
    """'427' -> the concatenated one-hots of 4, 2 and 7, shape (10·len(name),)."""
    return F.one_hot(torch.tensor([int(ch) for ch in name]), 10).flatten().float()
