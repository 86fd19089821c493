"""Figures of trained runs (:mod:`.figures`), one function per figure in ``FIGURES``."""

from vaelab.viz.figures import FIGURES

__all__ = ["FIGURES"]
