"""Sequence examples: the item vocabulary, the split and the sampled negatives, as pure transforms.

An actor's *timeline* is its non-bot events of the configured types, ordered by
``(event_time, event_id)``, each mapped to its vocabulary index (1 when out of vocabulary). Items
with an index >= 2 are *eligible* targets. The split labels each event of the timeline:

* ``leave_last_out``: the last eligible event is the test target, the one before it the validation
  target, and events before the validation target are train; an actor with fewer than 3 eligible
  events is all train. Out-of-vocabulary events between the two targets are only context.
* ``time_cutoff``: events before ``validation_start`` are train, then validation until
  ``test_start``, then test; every eligible validation or test event is a target.

An example is a target and the (at most ``max_len``) events before it in its grain: the actor's
timeline (grain ``user``, identified users only) or the target's session (grain ``session``). The
train example of a user or session is its last eligible train event, so no train input ever holds a
validation or test target or anything after one. See docs/SEQUENCES.md.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from shoplens import schemas as S
from shoplens.config import SPLIT_LEAVE_LAST_OUT, SequencesConfig
from shoplens.sessions import ACTOR, actor_key, actor_order, without_copies

IS_ELIGIBLE = "_is_eligible"
_K = "_k"
_TOUCHED = "_touched"
_DRAWN = "_drawn"

# Candidate draws per example in each round of negative sampling, as a multiple of the number
# wanted (plus a margin); a later round is drawn only for an example the earlier left short. See
# :func:`_with_negatives_of`.
_ROUND_FACTORS = (1, 4, 32)
_ROUND_MARGIN = 32


def counted_events(events: DataFrame, event_types: tuple[str, ...]) -> DataFrame:
    """The events that enter sequences: not a bot's, of ``event_types``, each event once.

    Returns: one row per distinct event (dataset, event_id); dataset, user_id, session_key (for
    anonymous actors only), ``_actor``, event_id, event_time, item_id.
    """
    user = F.col(S.USER_ID)
    anonymous_key = F.when(user.isNull(), F.col(S.SESSION_KEY))
    kept = events.where(~F.col(S.IS_BOT) & F.col(S.EVENT_TYPE).isin(*event_types)).select(
        S.DATASET,
        S.USER_ID,
        anonymous_key.alias(S.SESSION_KEY),
        actor_key(user, anonymous_key).alias(ACTOR),
        S.EVENT_ID,
        S.EVENT_TIME,
        S.ITEM_ID,
    )
    return without_copies(kept.where(F.col(ACTOR).isNotNull()), actor_order())


def item_counts(counted: DataFrame) -> DataFrame:
    """Returns: one row per (dataset, item_id) with its ``count`` of counted events."""
    return counted.groupBy(S.DATASET, S.ITEM_ID).agg(F.count(F.lit(1)).alias(S.COUNT))


def vocab_updates(counts: DataFrame, vocab: DataFrame, min_count: int, run_date: dt.date) -> DataFrame:
    """The rows to MERGE into gold.item_vocab: known items with their current count (their index
    kept), and items new to the vocabulary that reached ``min_count``, numbered after the dataset's
    highest index in the order (count descending, item_id).

    Returns: one row per (dataset, item_id) to upsert; gold.item_vocab's columns.
    """
    indexed = vocab.select(S.DATASET, S.ITEM_ID, S.ITEM_INDEX, S.FIRST_RUN_DATE)
    known = counts.join(indexed, [S.DATASET, S.ITEM_ID], "inner")
    highest = vocab.groupBy(S.DATASET).agg(F.max(S.ITEM_INDEX).alias("_highest"))
    ranked = Window.partitionBy(S.DATASET).orderBy(F.col(S.COUNT).desc(), F.col(S.ITEM_ID))
    new = (
        counts.join(vocab.select(S.DATASET, S.ITEM_ID), [S.DATASET, S.ITEM_ID], "left_anti")
        .where(F.col(S.COUNT) >= F.lit(min_count))
        .join(highest, [S.DATASET], "left")
        .select(
            S.DATASET,
            S.ITEM_ID,
            S.COUNT,
            (F.coalesce(F.col("_highest"), F.lit(S.OOV_INDEX)) + F.row_number().over(ranked)).alias(S.ITEM_INDEX),
            F.lit(run_date).alias(S.FIRST_RUN_DATE),
        )
    )
    columns = [S.DATASET, S.ITEM_ID, S.ITEM_INDEX, S.FIRST_RUN_DATE, S.COUNT]
    return known.select(*columns).unionByName(new.select(*columns))


def with_item_index(counted: DataFrame, vocab: DataFrame) -> DataFrame:
    """Adds ``item_index`` (1 for an item not in the vocabulary) and ``_is_eligible`` (index >= 2).

    Returns: one row per input row.
    """
    indexed = counted.join(vocab.select(S.DATASET, S.ITEM_ID, S.ITEM_INDEX), [S.DATASET, S.ITEM_ID], "left")
    index = F.coalesce(F.col(S.ITEM_INDEX), F.lit(S.OOV_INDEX)).cast("int")
    return indexed.withColumn(S.ITEM_INDEX, index).withColumn(IS_ELIGIBLE, index >= F.lit(2))


def with_split(timeline: DataFrame, cfg: SequencesConfig) -> DataFrame:
    """Adds ``split``: train / validation / test, or null for context-only events (see module doc).

    Returns: one row per input row.
    """
    if cfg.split != SPLIT_LEAVE_LAST_OUT:
        validation_start, test_start = cfg.cutoffs
        t = F.col(S.EVENT_TIME)
        split = (
            F.when(t < F.lit(validation_start), F.lit(S.TRAIN))
            .when(t < F.lit(test_start), F.lit(S.VALIDATION))
            .otherwise(F.lit(S.TEST))
        )
        return timeline.withColumn(S.SPLIT, split)
    ordered = actor_order()
    whole = ordered.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    running = ordered.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    eligible = F.col(IS_ELIGIBLE).cast("int")
    n = F.sum(eligible).over(whole)
    k = F.sum(eligible).over(running)
    is_eligible = F.col(IS_ELIGIBLE)
    split = (
        F.when(n < 3, F.lit(S.TRAIN))
        .when(is_eligible & (k == n), F.lit(S.TEST))
        .when(is_eligible & (k == n - 1), F.lit(S.VALIDATION))
        .when(k <= n - 2, F.lit(S.TRAIN))
    )
    return timeline.withColumn(S.SPLIT, split)


def examples(labelled: DataFrame, grain: str, max_len: int) -> DataFrame:
    """The examples of one grain from a labelled timeline (with ``session_id`` for grain session).

    Targets: each eligible validation and test event, and the last eligible train event of each
    user (grain user) or session (grain session). Input: the up to ``max_len`` events before the
    target in the same user timeline or session, oldest first. Examples with no input are dropped.

    Returns: one row per example (example_id); dataset, grain, split, example_id, user_id,
    session_key, session_id, ``_actor``, target_time, input_items, target_item, n_items.
    """
    if grain == S.GRAIN_USER:
        rows = labelled.where(F.col(S.USER_ID).isNotNull()).withColumn(S.SESSION_ID, F.lit(None).cast("string"))
        keys = [S.DATASET, ACTOR]
    else:
        rows = labelled
        keys = [S.DATASET, ACTOR, S.SESSION_ID]
    ordered = Window.partitionBy(*keys).orderBy(S.EVENT_TIME, S.EVENT_ID)
    before = ordered.rowsBetween(-max_len, -1)
    after = ordered.rowsBetween(1, Window.unboundedFollowing)
    is_train_candidate = F.col(IS_ELIGIBLE) & (F.col(S.SPLIT) == S.TRAIN)
    later_train_candidates = F.sum(is_train_candidate.cast("int")).over(after)
    is_last_train = is_train_candidate & (F.coalesce(later_train_candidates, F.lit(0)) == 0)
    is_evaluation_target = F.col(IS_ELIGIBLE) & F.col(S.SPLIT).isin(S.VALIDATION, S.TEST)
    with_inputs = rows.select(
        "*",
        F.collect_list(S.ITEM_INDEX).over(before).alias(S.INPUT_ITEMS),
        (is_last_train | is_evaluation_target).alias("_is_target"),
    )
    example_id = F.sha2(
        F.concat_ws(
            "\n",
            F.lit(grain),
            F.col(S.DATASET),
            F.col(ACTOR),
            F.coalesce(F.col(S.SESSION_ID), F.lit("")),
            F.col(S.EVENT_ID),
        ),
        256,
    )
    return with_inputs.where(F.col("_is_target") & (F.size(S.INPUT_ITEMS) > 0)).select(
        S.DATASET,
        F.lit(grain).alias(S.GRAIN),
        S.SPLIT,
        example_id.alias(S.EXAMPLE_ID),
        S.USER_ID,
        S.SESSION_KEY,
        S.SESSION_ID,
        ACTOR,
        F.col(S.EVENT_TIME).alias(S.TARGET_TIME),
        S.INPUT_ITEMS,
        F.col(S.ITEM_INDEX).alias(S.TARGET_ITEM),
        F.size(S.INPUT_ITEMS).alias(S.N_ITEMS),
    )


def interactions(events: DataFrame, vocab: DataFrame) -> DataFrame:
    """Every vocabulary item each actor touched, by any event (bots' and any type included).

    Returns: one row per (dataset, _actor, item_index).
    """
    user = F.col(S.USER_ID)
    actor = actor_key(user, F.when(user.isNull(), F.col(S.SESSION_KEY)))
    touched = events.select(S.DATASET, actor.alias(ACTOR), S.ITEM_ID).where(F.col(ACTOR).isNotNull())
    return (
        touched.join(vocab.select(S.DATASET, S.ITEM_ID, S.ITEM_INDEX), [S.DATASET, S.ITEM_ID], "inner")
        .select(S.DATASET, ACTOR, S.ITEM_INDEX)
        .distinct()
    )


def _touched_sets(touched: DataFrame) -> DataFrame:
    """Returns: one row per actor of ``touched`` (:func:`interactions`): _actor, ``_touched`` (its items)."""
    return touched.groupBy(ACTOR).agg(F.collect_set(S.ITEM_INDEX).alias(_TOUCHED))


def _first_untouched(seed: int, n_items: int, n: int, draws: int) -> Column:
    """The first ``n`` distinct items of the row's first ``draws`` draws that its actor never touched."""
    example_id = F.col(S.EXAMPLE_ID)
    drawn = F.transform(
        F.sequence(F.lit(0), F.lit(draws - 1)),
        lambda k: (F.lit(2) + F.pmod(F.xxhash64(F.lit(seed), example_id, k), F.lit(n_items))).cast("int"),
    )
    # array_except keeps the first occurrence of each element, in order, and drops touched ones.
    return F.slice(F.array_except(drawn, _touched()), 1, n)


def _touched() -> Column:
    return F.coalesce(F.col(_TOUCHED), F.array().cast("array<int>"))


def _with_negatives_of(
    rows: DataFrame, columns: list[str], keep: Column, seed: int, max_index: int, n: int
) -> DataFrame:
    """Adds ``negatives`` to the rows where ``keep`` holds (null elsewhere), from their
    ``example_id`` and their actor's ``_touched`` items (null: none).

    The first ``n`` distinct untouched items of the draws ``2 + pmod(xxhash64(seed, example_id, k),
    max_index - 1)``, k = 0, 1, ..., looked for in prefixes of growing length (``_ROUND_FACTORS``).
    The first prefix is a column of its own (computed once); a longer one is drawn only for a row
    the shorter one left short (CASE WHEN evaluates one branch). A prefix's first ``n`` are the
    same whatever the prefix, so the result does not depend on the rounds. Past the last round, the
    first ``n`` untouched items ordered by ``xxhash64(seed, example_id, item)``, or all of them when
    fewer exist. Sorted ascending.

    Returns: ``columns`` and ``negatives``, one row per input row.
    """
    n_items = max_index - 1
    if n_items < 1:
        return rows.select(*columns, F.when(keep, F.array().cast("array<int>")).alias(S.NEGATIVES))
    first, *later = (n * factor + _ROUND_MARGIN for factor in _ROUND_FACTORS)
    drawn = rows.select(*columns, _TOUCHED, F.when(keep, _first_untouched(seed, n_items, n, first)).alias(_DRAWN))
    example_id = F.col(S.EXAMPLE_ID)
    ranked = F.array_sort(
        F.transform(
            F.array_except(F.sequence(F.lit(2), F.lit(max_index)), _touched()),
            lambda item: F.struct(F.xxhash64(F.lit(seed), example_id, item).alias(_K), item.alias(S.ITEM_INDEX)),
        )
    )
    chosen = F.transform(F.slice(ranked, 1, n), lambda c: c[S.ITEM_INDEX])
    for draws in reversed(later):
        longer = _first_untouched(seed, n_items, n, draws)
        chosen = F.when(F.size(longer) >= n, longer).otherwise(chosen)
    chosen = F.when(F.size(_DRAWN) >= n, F.col(_DRAWN)).otherwise(chosen)
    return drawn.select(*columns, F.when(keep, F.array_sort(chosen)).alias(S.NEGATIVES))


def sample_negatives(need: DataFrame, touched: DataFrame, max_index: int, n: int, seed: int) -> DataFrame:
    """Up to ``n`` negatives per example of one dataset, uniform over the items it never touched.

    ``need`` has (example_id, _actor); ``touched`` is :func:`interactions`; the candidates are
    the vocabulary's indices 2..``max_index``. An example's negatives are the first ``n`` distinct
    untouched items of its hash sequence ``2 + pmod(xxhash64(seed, example_id, k), max_index - 1)``,
    k = 0, 1, 2, ...: a uniform sample without replacement, the same on every run. Each example
    needs about n + margin draws, computed on its row next to its actor's set of items (one join
    per actor, not with the catalogue). An example that still lacks ``n`` after the last round (its
    actor touched most of the catalogue) takes the first ``n`` of all its untouched items ordered
    by ``xxhash64(seed, example_id, item)``, or all of them when fewer than ``n`` exist.

    Returns: one row per example of ``need``: example_id, negatives (sorted ascending).
    """
    joined = need.join(_touched_sets(touched), [ACTOR], "left")
    return _with_negatives_of(joined, [S.EXAMPLE_ID], F.lit(True), seed, max_index, n)


def with_negatives(examples_df: DataFrame, touched: DataFrame, max_index: int, n: int, seed: int) -> DataFrame:
    """Adds ``negatives`` to validation and test examples (null for train): :func:`sample_negatives`.

    Returns: one row per input row.
    """
    is_evaluation = F.col(S.SPLIT).isin(S.VALIDATION, S.TEST)
    joined = examples_df.join(_touched_sets(touched), [ACTOR], "left")
    return _with_negatives_of(joined, examples_df.columns, is_evaluation, seed, max_index, n)


def with_shard(examples_df: DataFrame, num_shards: int) -> DataFrame:
    """Adds ``shard`` = pmod(xxhash64(user_id, session_key), num_shards): every example of an actor
    (user, else anonymous session key; the other is null and hashing skips nulls) in one shard.

    Returns: one row per input row.
    """
    shard = F.pmod(F.xxhash64(F.col(S.USER_ID), F.col(S.SESSION_KEY)), F.lit(num_shards)).cast("int")
    return examples_df.withColumn(S.SHARD, shard)
