"""Fitting Spark ML's ALS with the settings users keep getting wrong (STACK.md): a reliable
checkpoint directory always set (else ``checkpointInterval`` is silently ignored and long lineage
ends in a StackOverflowError), block counts sized to the data, integer ids from the id maps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shoplens import schemas as S
from shoplens.config import Config

RATING = "rating"


@dataclass(frozen=True)
class Params:
    rank: int
    reg_param: float
    alpha: float


def checkpoint_dir(cfg: Config) -> str:
    return f"{cfg.paths.warehouse.rstrip('/')}/_checkpoints/als"


def set_checkpoint_dir(spark: SparkSession, cfg: Config) -> None:
    """Points the SparkContext's checkpoint directory at the warehouse (reliable storage)."""
    spark.sparkContext.setCheckpointDir(checkpoint_dir(cfg))


def block_count(n: int, rows_per_block: int, max_blocks: int) -> int:
    """One block per ``rows_per_block`` ids, at least 1, at most ``max_blocks``."""
    return max(1, min(max_blocks, math.ceil(n / rows_per_block)))


def fit(
    spark: SparkSession,
    ratings: DataFrame,
    params: Params,
    *,
    implicit: bool,
    max_iter: int,
    seed: int,
    checkpoint_interval: int,
    n_users: int,
    n_items: int,
    rows_per_block: int,
    max_blocks: int,
) -> ALSModel:
    """Fits ALS on ``ratings`` (user_index, item_index, rating).

    Implicit: ``rating`` is the confidence signal r, ALS weighs a pair by 1 + alpha·r. Explicit:
    ``rating`` is the rating itself. Raises RuntimeError when no checkpoint directory is set.
    """
    if not spark.sparkContext.getCheckpointDir():
        raise RuntimeError(
            "ALS needs a checkpoint directory (set_checkpoint_dir): without one Spark ignores "
            "checkpointInterval and long lineage overflows the stack"
        )
    als = ALS(
        rank=params.rank,
        maxIter=max_iter,
        regParam=params.reg_param,
        alpha=params.alpha,
        implicitPrefs=implicit,
        userCol=S.USER_INDEX,
        itemCol=S.ITEM_INDEX,
        ratingCol=RATING,
        seed=seed,
        checkpointInterval=checkpoint_interval,
        numUserBlocks=block_count(n_users, rows_per_block, max_blocks),
        numItemBlocks=block_count(n_items, rows_per_block, max_blocks),
        coldStartStrategy="nan",
        nonnegative=False,
    )
    return als.fit(ratings.select(S.USER_INDEX, S.ITEM_INDEX, F.col(RATING).cast("float").alias(RATING)))


def factors(model: ALSModel) -> tuple[DataFrame, DataFrame]:
    """(user factors: user_index, features), (item factors: item_index, features)."""
    return (
        model.userFactors.select(F.col("id").alias(S.USER_INDEX), "features"),
        model.itemFactors.select(F.col("id").alias(S.ITEM_INDEX), "features"),
    )


def rating_errors(predicted: DataFrame, prediction: str = "prediction") -> dict[str, float | int]:
    """RMSE and MAE of ``prediction`` against ``rating`` over the rows whose prediction is a number.

    Returns: {"rmse", "mae", "n"} (rmse and mae None when no row is scorable).
    """
    error = F.col(prediction) - F.col(RATING)
    scorable = predicted.where(F.col(prediction).isNotNull() & ~F.isnan(prediction))
    row = scorable.agg(
        F.sqrt(F.avg(error * error)).alias("rmse"), F.avg(F.abs(error)).alias("mae"), F.count(F.lit(1)).alias("n")
    ).first()
    assert row is not None
    return {"rmse": row["rmse"], "mae": row["mae"], "n": int(row["n"])}
