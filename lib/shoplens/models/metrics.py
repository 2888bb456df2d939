"""Next-item ranking metrics, in numpy, from the rank of each example's target.

Every example has exactly one relevant item, its target. Its *rank* is the number of competing items
scored at least as high as the target (0 = the target is first). Ties count against the target, so
a model that scores everything alike gets no credit for it.

Two protocols, never mixed (docs/SEQREC.md; metrics against sampled negatives run about 3 times
those against the full catalogue):

- ``sampled``: the target against the example's negatives (99 items the actor never touched, from
  gold.sequence_examples): 100 candidates.
- ``full``: the target against every item of the vocabulary (indices ``FIRST_ITEM`` .. V-1, i.e.
  neither padding nor out-of-vocabulary), items the actor already touched included.

From ranks: HR@K = 1 if rank < K; NDCG@K = 1 / log2(rank + 2) if rank < K (one relevant item, so
the ideal DCG is 1); MRR@K = 1 / (rank + 1) if rank < K; P@K = HR@K / K. Each is the mean over
examples.
"""

from __future__ import annotations

import numpy as np

from shoplens import schemas as S

# The first real item index: 0 is padding, 1 out of vocabulary.
FIRST_ITEM = S.OOV_INDEX + 1
PROTOCOLS = ("sampled", "full")


def sampled_ranks(target_scores: np.ndarray, negative_scores: np.ndarray, negative_mask: np.ndarray) -> np.ndarray:
    """Ranks of targets among their sampled negatives.

    ``target_scores`` (n,), ``negative_scores`` (n, m) and ``negative_mask`` (n, m), true where a
    negative is real (an example with fewer than m negatives is padded; padding never competes).

    Returns: (n,) int64, the number of real negatives scored at least as high as the target.
    """
    ahead = (negative_scores >= target_scores[:, None]) & negative_mask
    return ahead.sum(axis=1).astype(np.int64)


def full_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Ranks of targets among every item of the vocabulary.

    ``scores`` (n, V), one column per item index; ``targets`` (n,) item indices >= FIRST_ITEM.
    Padding and out-of-vocabulary columns never compete.

    Returns: (n,) int64, the number of other items (indices >= FIRST_ITEM) scored at least as high
    as the target.
    """
    target_scores = scores[np.arange(len(targets)), targets]
    ahead = (scores[:, FIRST_ITEM:] >= target_scores[:, None]).sum(axis=1)
    # The target itself is always counted above (its score equals itself).
    return (ahead - 1).astype(np.int64)


def hit_rate(ranks: np.ndarray, k: int) -> float:
    """HR@k: the share of examples whose target ranks in the top k."""
    return float(np.mean(ranks < k))


def ndcg(ranks: np.ndarray, k: int) -> float:
    """NDCG@k with one relevant item: mean of 1 / log2(rank + 2) over targets in the top k, else 0."""
    gains = np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
    return float(np.mean(gains))


def mrr(ranks: np.ndarray, k: int) -> float:
    """MRR@k: mean of 1 / (rank + 1) over targets in the top k, else 0."""
    return float(np.mean(np.where(ranks < k, 1.0 / (ranks + 1.0), 0.0)))


def precision(ranks: np.ndarray, k: int) -> float:
    """P@k with one relevant item per example: HR@k / k."""
    return hit_rate(ranks, k) / k


def ranking_metrics(ranks: np.ndarray, protocol: str) -> dict[str, float]:
    """The reported figures for one protocol.

    Returns: ``{"hr@10_<protocol>", "ndcg@10_<protocol>", "hr@20_<protocol>", "ndcg@20_<protocol>",
    "mrr@20_<protocol>", "p@20_<protocol>"}``, each the mean over the examples.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("no examples to evaluate: ranking metrics of an empty set are undefined")
    figures = {}
    for k in (10, 20):
        figures[f"hr@{k}"] = hit_rate(ranks, k)
        figures[f"ndcg@{k}"] = ndcg(ranks, k)
    figures["mrr@20"] = mrr(ranks, 20)
    figures["p@20"] = precision(ranks, 20)
    return {f"{name}_{protocol}": value for name, value in figures.items()}


def popularity_scores(targets: np.ndarray, vocab_size: int) -> np.ndarray:
    """The popularity baseline: each item's count among ``targets`` (e.g. the train targets).

    Returns: (vocab_size,) float64, one score per item index.
    """
    return np.bincount(np.asarray(targets, dtype=np.int64), minlength=vocab_size)[:vocab_size].astype(np.float64)
