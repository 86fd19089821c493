"""Run folders: checkpoints that resume bit for bit (:mod:`.folder`), a trained model back
from its folder (:mod:`.load`), and the stages fitted after training (:mod:`.stages`)."""

from vaelab.runs.folder import RunFolder
from vaelab.runs.load import load_run, load_test_batches
from vaelab.runs.stages import finish_stages, load_stages, run_stages

__all__ = [
    "RunFolder",
    "load_run",
    "load_test_batches",
    "load_stages",
    "run_stages",
    "finish_stages",
]
