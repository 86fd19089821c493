"""Evaluation: the mean objective and its terms (:mod:`.common`), the importance-sampled
likelihood and each model's test record (:mod:`.likelihood`), and the classifier's judgement
of generated images (:mod:`.generation`)."""

from vaelab.eval.common import evaluating, mean_objective, mean_terms
from vaelab.eval.likelihood import evaluate_run, evaluation_for, log_likelihood

__all__ = ["evaluating", "mean_objective", "mean_terms", "evaluate_run", "evaluation_for",
           "log_likelihood"]  # fmt: skip
