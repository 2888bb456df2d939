"""Evaluation figures of a scored split: PR-AUC and ROC-AUC (Spark's BinaryClassificationEvaluator,
distributed), and precision, recall, F1 at a threshold (one aggregation, which also tells whether
the split has both classes). No collect of rows."""

from __future__ import annotations

from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shoplens import schemas as S


def figures(scored: DataFrame, score: str, predicted: F.Column) -> dict[str, float | None]:
    """PR-AUC and ROC-AUC of ``score`` (higher = more likely churn) against ``label``, and the
    figures of :func:`at_threshold`. The AUCs are None on an empty or single-class split, where
    they are undefined: the threshold's aggregation tells, so that costs no Spark job of its own."""
    counts = at_threshold(scored, predicted)
    both_classes = counts["positive_rate"] is not None and 0 < counts["positive_rate"] < 1
    return {
        "pr_auc": auc(scored, score, "areaUnderPR") if both_classes else None,
        "roc_auc": auc(scored, score, "areaUnderROC") if both_classes else None,
        **counts,
    }


def auc(scored: DataFrame, score: str, metric: str) -> float:
    """``areaUnderPR`` or ``areaUnderROC`` of ``score`` against ``label`` on a split with both classes."""
    evaluator = BinaryClassificationEvaluator(rawPredictionCol=score, labelCol=S.LABEL, metricName=metric)
    return float(evaluator.evaluate(scored))


def at_threshold(scored: DataFrame, predicted: F.Column) -> dict[str, float | None]:
    """Precision, recall and F1 of the boolean ``predicted`` (churn) against ``label``, and the
    split's size and positive rate. An undefined ratio (nothing predicted, no positives) is 0.0 for
    precision, recall and F1 (the convention of scikit-learn's zero_division=0)."""
    positive = F.col(S.LABEL) == 1.0
    row = scored.agg(
        F.count(F.lit(1)).alias("n"),
        F.count(F.when(positive, True)).alias("pos"),
        F.count(F.when(predicted, True)).alias("pred"),
        F.count(F.when(predicted & positive, True)).alias("tp"),
    ).first()
    n, pos, pred, tp = row["n"], row["pos"], row["pred"], row["tp"]
    precision = tp / pred if pred else 0.0
    recall = tp / pos if pos else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": n,
        "positive_rate": pos / n if n else None,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }
