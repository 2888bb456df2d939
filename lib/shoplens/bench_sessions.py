"""``python -m shoplens.bench sessions --scale N``: Spark sessionization against DuckDB, same input.

1. Generates the demo shop with about N events and turns its landing lines into the columns
   sessionization reads (typed, valid, each event once, the generator's bots flagged), written
   once as Parquet. Not timed as sessionization (``prep_seconds``).
2. Spark: read that Parquet → :mod:`shoplens.sessions` (the job's transforms, no state) → write the
   sessions as Parquet. ``shuffles`` counts the Exchange nodes of its physical plan.
3. DuckDB: the same rule in SQL over the same Parquet, writing its sessions as Parquet (read and
   write included), with as many threads as Spark has cores.
   Each engine runs once, then ``--repeat`` more times: ``seconds`` and ``duckdb_seconds`` are the
   medians of the later runs (the engines' steady state), ``ratio`` their quotient;
   ``seconds_first`` and ``duckdb_seconds_first`` are the first runs (Spark's includes the JVM
   compiling its operators for a new query: about 8 s at 1M events on 2 cores, whatever the size).
4. ``same_boundaries``: both outputs hold exactly the same (session_id, start, end, events) rows;
   the session id hashes the dataset, actor, start time and first event, so equal ids mean equal
   cuts.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shoplens import cli, sessions
from shoplens import schemas as S
from shoplens.config import Config
from shoplens.ingest.rules import CANONICAL_EVENT_TYPES
from shoplens.session import build_session

_SHUFFLE = r"(?<![A-Za-z])Exchange (?:hashpartitioning|rangepartitioning|SinglePartition|RoundRobin)"
INPUT_COLUMNS = (
    S.DATASET, S.USER_ID, S.SESSION_KEY, S.EVENT_ID, S.EVENT_TIME, S.EVENT_TYPE, S.ITEM_ID, S.CATEGORY_ID,
    S.PRICE, S.QUANTITY, S.IS_BOT,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", type=int, required=True, help="demo shop events to generate")
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--start", default="2024-01-01")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the input and outputs here")
    parser.add_argument(
        "--repeat", type=_positive, default=3, help="timed runs of each engine after its first (default 3)"
    )
    cli.add_env_args(parser)


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def landing_events(spark: SparkSession, landing: str, bots: list[str]) -> DataFrame:
    """The demo shop's landing lines as sessionization input: typed, valid, one row per event id.

    Returns: one row per distinct valid event; :data:`INPUT_COLUMNS`.
    """
    # A folder and a file filter, not a glob path: Spark would probe a glob as a sink's metadata folder.
    reader = spark.read.schema(S.LANDING_EVENT_JSON).option("recursiveFileLookup", "true")
    raw = reader.option("pathGlobFilter", "part-*").json(f"{landing.rstrip('/')}/events")
    event_time = F.try_to_timestamp(F.trim(F.col(S.EVENT_TIME)))
    event_type = F.lower(F.trim(F.col(S.EVENT_TYPE)))
    typed = raw.select(
        F.lit(S.DATASET_LANDING).alias(S.DATASET),
        S.USER_ID,
        S.SESSION_KEY,
        S.EVENT_ID,
        event_time.alias(S.EVENT_TIME),
        event_type.alias(S.EVENT_TYPE),
        S.ITEM_ID,
        S.CATEGORY_ID,
        F.col(S.PRICE).try_cast("decimal(18,2)").alias(S.PRICE),
        F.col(S.QUANTITY).try_cast("int").alias(S.QUANTITY),
        F.col(S.USER_ID).isin(*bots).alias(S.IS_BOT) if bots else F.lit(False).alias(S.IS_BOT),
    )
    is_valid = (
        F.col(S.EVENT_ID).isNotNull()
        & F.col(S.EVENT_TIME).isNotNull()
        & F.col(S.EVENT_TYPE).isin(*CANONICAL_EVENT_TYPES)
        & F.col(S.ITEM_ID).isNotNull()
        & (F.col(S.USER_ID).isNotNull() | F.col(S.SESSION_KEY).isNotNull())
    )
    return typed.where(is_valid).dropDuplicates([S.EVENT_ID]).select(
        *INPUT_COLUMNS[:-1], F.coalesce(F.col(S.IS_BOT), F.lit(False)).alias(S.IS_BOT)
    )


def spark_sessions(spark: SparkSession, cfg: Config, input_path: str) -> DataFrame:
    """Returns: the sessions of the Parquet input, as the job computes them (one row per session)."""
    events = spark.read.parquet(input_path)
    marked = sessions.mark_sessions(sessions.actor_events(events), cfg.sessions.gap_us, cfg.sessions.max_length_us)
    return sessions.session_rows(marked, cfg.shop.timezone)


def local_cores(master: str) -> int:
    """The cores Spark uses: N of ``local[N]``, else every core of this machine."""
    m = re.fullmatch(r"local\[(\d+)(?:,\d+)?\]", master.strip())
    if m:
        return int(m.group(1))
    return os.cpu_count() or 1


def count_shuffles(df: DataFrame) -> int:
    """The number of shuffle Exchange nodes in ``df``'s physical plan (broadcasts are not shuffles)."""
    plan = df._jdf.queryExecution().executedPlan().toString()
    return len(re.findall(_SHUFFLE, plan))


def duckdb_sql(input_path: str, output_path: str, cfg: Config) -> str:
    """The session rule (:mod:`shoplens.sessions`) over the same Parquet input, in DuckDB's SQL."""
    gap, max_length = cfg.sessions.gap_us, cfg.sessions.max_length_us
    return f"""
COPY (
  WITH a AS (
    SELECT dataset, user_id,
           CASE WHEN user_id IS NULL THEN session_key END AS session_key,
           CASE WHEN user_id IS NOT NULL THEN 'u:' || user_id ELSE 's:' || session_key END AS actor,
           event_id, event_time, epoch_us(event_time) AS us, event_type, item_id, category_id, price,
           quantity, is_bot
    FROM read_parquet('{input_path}/*.parquet')
    WHERE user_id IS NOT NULL OR session_key IS NOT NULL
  ), distinct_events AS (
    SELECT * FROM a
    WINDOW w AS (PARTITION BY dataset, actor ORDER BY event_time, event_id)
    QUALIFY coalesce(lag(event_id) OVER w = event_id AND lag(us) OVER w = us, false) = false
  ), flagged AS (
    SELECT *, coalesce(us - lag(us) OVER w > {gap}, true) AS is_new_activity
    FROM distinct_events
    WINDOW w AS (PARTITION BY dataset, actor ORDER BY event_time, event_id)
  ), numbered AS (
    SELECT *, sum(CAST(is_new_activity AS INTEGER)) OVER (
      PARTITION BY dataset, actor ORDER BY event_time, event_id ROWS UNBOUNDED PRECEDING) AS activity
    FROM flagged
  ), chunked AS (
    SELECT *, (us - min(us) OVER (PARTITION BY dataset, actor, activity)) // {max_length} AS chunk,
           min(event_time) OVER (PARTITION BY dataset, actor, activity) AS activity_start
    FROM numbered
  ), s AS (
    SELECT dataset, actor, any_value(user_id) AS user_id, any_value(session_key) AS session_key,
           min(event_time) AS start_time, max(event_time) AS end_time,
           first(event_id ORDER BY event_time, event_id) AS first_event_id,
           count(*) AS n_events, count(DISTINCT item_id) AS n_distinct_items,
           count_if(event_type = 'view') AS views, count_if(event_type = 'cart') AS carts,
           count_if(event_type = 'purchase') AS purchases,
           sum(CASE WHEN event_type = 'purchase' THEN price * coalesce(quantity, 1) END) AS purchase_value,
           first(item_id ORDER BY event_time, event_id) AS entry_item,
           last(item_id ORDER BY event_time, event_id) AS exit_item,
           list_sort(list_distinct(list(category_id) FILTER (WHERE category_id IS NOT NULL))) AS categories,
           bool_or(is_bot) AS is_bot, any_value(activity_start) AS activity_start
    FROM chunked
    GROUP BY dataset, actor, activity, chunk
  )
  SELECT sha256(concat_ws(chr(10), dataset, actor, CAST(epoch_us(start_time) AS VARCHAR), first_event_id))
           AS session_id,
         dataset, user_id, session_key, start_time, end_time,
         (epoch_us(end_time) - epoch_us(start_time)) // 1000000 AS duration_s,
         n_events, n_distinct_items, views, carts, purchases, purchases > 0 AS is_converted,
         CASE WHEN purchases = 0 THEN 0 ELSE purchase_value END AS revenue,
         entry_item, exit_item, categories, is_bot, activity_start
  FROM s
) TO '{output_path}' (FORMAT parquet)
"""


def timed_runs(run: Callable[[], Any], repeat: int) -> tuple[float, list[float]]:
    """Runs ``run`` once, then ``repeat`` more times.

    Returns: the first run's seconds (a new query in the process: the JVM still compiles Spark's
    operators on the way) and each later run's seconds.
    """
    times = []
    for _ in range(1 + repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return times[0], times[1:]


def bench_sessions(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Runs the benchmark in ``workdir``; returns its figures (see the module docstring)."""
    import duckdb

    from shoplens.bench import workdir_config
    from shoplens.demo import generate

    cfg = workdir_config(args, workdir)
    started = time.perf_counter()
    manifest = generate(cfg.paths.landing, args.start, args.days, args.scale, args.seed, overwrite=True)
    generation_s = time.perf_counter() - started

    spark = build_session(cfg, "shoplens.bench sessions")
    # Microsecond timestamps in Parquet, which every reader (DuckDB included) reads the same way.
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    input_path = str(workdir / "input")
    started = time.perf_counter()
    bots = list(manifest.get("bots", {}).get("user_ids", []))
    landing_events(spark, cfg.paths.landing, bots).write.mode("overwrite").parquet(input_path)
    prep_s = time.perf_counter() - started
    events = spark.read.parquet(input_path).count()

    spark_out = str(workdir / "spark_sessions")
    shuffles = count_shuffles(spark_sessions(spark, cfg, input_path))

    def run_spark() -> None:
        spark_sessions(spark, cfg, input_path).write.mode("overwrite").parquet(spark_out)

    spark_first, spark_runs = timed_runs(run_spark, args.repeat)

    duck_out = str(workdir / "duckdb_sessions.parquet")
    threads = local_cores(cfg.spark.master)
    con = duckdb.connect()
    con.execute(f"SET threads TO {threads}")
    con.execute("SET TimeZone = 'UTC'")
    duck_first, duck_runs = timed_runs(lambda: con.execute(duckdb_sql(input_path, duck_out, cfg)), args.repeat)
    seconds, duckdb_s = statistics.median(spark_runs), statistics.median(duck_runs)

    key = "session_id, epoch_us(start_time) AS s, epoch_us(end_time) AS e, n_events"
    differences = con.execute(
        f"""SELECT count(*) FROM (
              (SELECT {key} FROM read_parquet('{spark_out}/*.parquet')
               EXCEPT ALL SELECT {key} FROM read_parquet('{duck_out}'))
              UNION ALL
              (SELECT {key} FROM read_parquet('{duck_out}')
               EXCEPT ALL SELECT {key} FROM read_parquet('{spark_out}/*.parquet')))"""
    ).fetchone()
    n_sessions = con.execute(f"SELECT count(*) FROM read_parquet('{spark_out}/*.parquet')").fetchone()
    duck_sessions = con.execute(f"SELECT count(*) FROM read_parquet('{duck_out}')").fetchone()
    assert differences is not None and n_sessions is not None and duck_sessions is not None
    return {
        "bench": "sessions",
        "scale": args.scale,
        "days": args.days,
        "events": events,
        "sessions": n_sessions[0],
        "duckdb_sessions": duck_sessions[0],
        "generation_seconds": round(generation_s, 1),
        "prep_seconds": round(prep_s, 1),
        "seconds": round(seconds, 2),
        "events_per_s": round(events / seconds, 1),
        "duckdb_seconds": round(duckdb_s, 2),
        "ratio": round(seconds / duckdb_s, 2),
        "seconds_first": round(spark_first, 2),
        "duckdb_seconds_first": round(duck_first, 2),
        "ratio_first": round(spark_first / duck_first, 2),
        "repeat": args.repeat,
        "duckdb_threads": threads,
        "same_boundaries": differences[0] == 0 and n_sessions[0] == duck_sessions[0],
        "shuffles": shuffles,
        "spark_master": cfg.spark.master,
        "gap_minutes": cfg.sessions.gap_minutes,
        "max_length_hours": cfg.sessions.max_length_hours,
    }


def main(args: argparse.Namespace) -> int:
    """Runs the benchmark (in a temporary folder unless ``--workdir``) and prints its JSON line."""
    from shoplens.bench import measure

    return measure(bench_sessions, args, "shoplens-bench-sessions-")
