"""Scores sequence examples and reports ranking figures under both protocols (``models.metrics``).

Batch by batch, so that (examples × vocabulary) scores never sit in memory at once; exact, since
the figures are means of per-example ranks. numpy only: a model is anything with
``predict_on_batch(item indices) -> scores (batch, vocab_size)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from shoplens import schemas as S
from shoplens.models import metrics as M
from shoplens.models.data import Examples


def evaluate(model: Any, examples: Examples, batch_size: int) -> dict[str, float]:
    """Scores the examples with ``model``.

    Returns: the ``metrics.ranking_metrics`` figures: ``..._full`` always, ``..._sampled`` when the
    examples carry negatives.
    """
    return _figures(lambda inputs: np.asarray(model.predict_on_batch(inputs)), examples, batch_size)


def evaluate_scores(scores: np.ndarray, examples: Examples, batch_size: int) -> dict[str, float]:
    """The same figures for a model that gives every example the same item ``scores``
    (vocab_size,), such as popularity."""
    return _figures(lambda inputs: np.broadcast_to(scores, (len(inputs), len(scores))), examples, batch_size)


def _figures(score: Callable[[np.ndarray], np.ndarray], examples: Examples, batch_size: int) -> dict[str, float]:
    full, sampled = [], []
    for start in range(0, len(examples), batch_size):
        inputs = examples.inputs[start:start + batch_size]
        targets = examples.targets[start:start + batch_size]
        scores = score(inputs)
        full.append(M.full_ranks(scores, targets))
        if examples.negatives is not None:
            negatives = examples.negatives[start:start + batch_size]
            sampled.append(
                M.sampled_ranks(
                    scores[np.arange(len(targets)), targets],
                    np.take_along_axis(scores, negatives, axis=1),
                    # An example with fewer negatives is padded with 0, which never competes.
                    negatives != S.PADDING_INDEX,
                )
            )
    figures = M.ranking_metrics(np.concatenate(full), "full")
    if sampled:
        figures.update(M.ranking_metrics(np.concatenate(sampled), "sampled"))
    return figures
