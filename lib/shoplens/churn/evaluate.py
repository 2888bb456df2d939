"""Evaluation figures of a scored split: PR-AUC and ROC-AUC (Spark's BinaryClassificationEvaluator,
distributed), and precision, recall, F1 at a threshold (one aggregation). No collect of rows."""

from __future__ import annotations

from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shoplens import schemas as S


def auc(scored: DataFrame, score: str, metric: str) -> float | None:
    """``areaUnderPR`` or ``areaUnderROC`` of ``score`` (higher = more likely churn) against
    ``label``; None on an empty or single-class split, where it is undefined."""
    classes = scored.agg(F.countDistinct(S.LABEL)).first()[0]
    if classes < 2:
        return None
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
