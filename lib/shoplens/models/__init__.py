"""Keras models. They know nothing of Horovod or Spark: ``shoplens.distributed`` adds the wiring.

:func:`build_model` is the one place that maps ``seqrec.model`` to a model: a new next-item model
plugs in with one entry in :data:`BUILDERS` (and its name in ``config.SEQREC_MODELS``). Each model
module is imported only when its model is built: importing this package stays cheap on the driver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shoplens.config import Config


def _gru4rec(cfg: Config, vocab_size: int) -> Any:
    from shoplens.models.gru4rec import build_gru4rec

    s, g = cfg.seqrec, cfg.seqrec.gru4rec
    return build_gru4rec(
        vocab_size, cfg.sequences.max_len, g.embedding_dim, g.hidden_units, g.dropout,
        num_sampled=s.num_sampled, seed=s.seed,
    )


def _sasrec(cfg: Config, vocab_size: int) -> Any:
    from shoplens.models.sasrec import build_sasrec

    s, a = cfg.seqrec, cfg.seqrec.sasrec
    return build_sasrec(
        vocab_size, cfg.sequences.max_len, a.embedding_dim, a.num_blocks, a.num_heads, a.dropout,
        num_sampled=s.num_sampled, loss_positions=a.loss_positions, seed=s.seed,
    )


# seqrec.model → a function (cfg, vocab_size) returning a built, uncompiled Keras model whose call on
# item indices (batch, max_len) int32, left-padded with 0, returns scores (batch, vocab_size), and
# which can be saved with ``model.save(path)`` (TF SavedModel) for ``shoplens.models.registry``.
BUILDERS: dict[str, Callable[[Config, int], Any]] = {
    "gru4rec": _gru4rec,
    "sasrec": _sasrec,
}


def build_model(cfg: Config, vocab_size: int) -> Any:
    """Returns the built, uncompiled ``cfg.seqrec.model`` for ``vocab_size`` item indices and inputs of
    ``cfg.sequences.max_len`` items (its variables exist, so a checkpoint can be restored into it).

    Raises: ValueError for a model name without a builder.
    """
    try:
        builder = BUILDERS[cfg.seqrec.model]
    except KeyError:
        raise ValueError(
            f"no builder for seqrec.model {cfg.seqrec.model!r} in shoplens.models.BUILDERS "
            f"(known: {', '.join(sorted(BUILDERS))})"
        ) from None
    return builder(cfg, vocab_size)
