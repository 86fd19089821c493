"""vaelab: autoencoders and variational autoencoders on images.

Built from the definitions of the thesis *On variational autoencoders: theory and
applications*; each public piece cites the definition it implements.
"""

from vaelab.errors import CheckpointError, ConfigError, DataError, VaelabError
from vaelab.images import flatten, make_grid, normalize, quantize, save_png, unflatten

__version__ = "0.1.0"

__all__ = [
    "VaelabError",
    "DataError",
    "ConfigError",
    "CheckpointError",
    "normalize",
    "quantize",
    "flatten",
    "unflatten",
    "make_grid",
    "save_png",
]
