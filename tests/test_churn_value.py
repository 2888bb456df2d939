"""Churn prediction, lifetime value (BG/NBD + Gamma-Gamma) and the shared gold.model_metrics table."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import random
from decimal import Decimal

import numpy as np
import pytest
from pyspark.ml import PipelineModel
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shoplens import catalog
from shoplens import schemas as S
from shoplens.churn import evaluate
from shoplens.churn.examples import labelled, with_features
from shoplens.jobs import build_churn_scores, build_customer_value, build_user_activity, build_user_profiles
from shoplens.metrics import Metric, write_metrics
from shoplens.profiles.activity import daily_activity
from shoplens.profiles.features import profile_rows
from shoplens.value import bgnbd
from shoplens.value.fit import Triple, ValueFit, fit_value
from shoplens.value.stats import grouped_triples, purchase_stats
from tests.synthetic_silver import ev, silver_frame, write_all_silver

D = dt.date
START = D(2024, 1, 1)


def _read(spark, spec, cfg, where=None):
    df = spark.read.format("delta").load(spec.location(cfg))
    return df.where(where) if where is not None else df


def _no_nan(df) -> None:
    for f in df.schema.fields:
        if isinstance(f.dataType, T.DoubleType):
            assert df.where(F.isnan(f.name)).count() == 0, f"NaN in {f.name}"


def _rows(df, order):
    return [r.asDict(recursive=True) for r in df.orderBy(*order).collect()]


def _cfg(fresh_cfg, **churn):
    """Churn over 14 days, two training snapshots 14 days apart; clustering off (too few users)."""
    settings = dataclasses.replace(
        fresh_cfg.churn, horizon_days=14, training_snapshots=2, snapshot_step_days=14, min_training_examples=20,
        gbt=dataclasses.replace(fresh_cfg.churn.gbt, max_iter=10, max_depth=3), **churn,
    )
    clusters = dataclasses.replace(fresh_cfg.profiles.clusters, min_users=10**6)
    return dataclasses.replace(
        fresh_cfg,
        churn=settings,
        profiles=dataclasses.replace(fresh_cfg.profiles, clusters=clusters),
        value=dataclasses.replace(fresh_cfg.value, min_customers=10),
    )


def shop(users: int, days: int, seed: int) -> list:
    """Buyers who each arrive, buy on some days at their own rate, then leave for good: churn that
    a model can see coming (falling activity) and a recency rule partly sees."""
    rng = random.Random(seed)
    events = []
    for u in range(users):
        user = f"user-{u:03d}"
        first = rng.randint(0, days // 3)
        life = int(rng.expovariate(1 / 45)) + 1
        rate = rng.choice([0.05, 0.1, 0.2, 0.35])
        for day in range(first, min(first + life, days)):
            t = dt.datetime.combine(START + dt.timedelta(days=day), dt.time(10, rng.randint(0, 59)))
            if day == first or rng.random() < rate:
                price = Decimal(rng.randint(500, 9000)) / 100
                events.append(ev(f"p-{u}-{day}", t.isoformat(), user, f"i{rng.randint(1, 9)}", "purchase",
                                 category_id=rng.choice(["c1", "c2"]), price=price, quantity=1))
            if rng.random() < 0.3:
                events.append(ev(f"v-{u}-{day}", (t - dt.timedelta(minutes=5)).isoformat(), user, "i1", "view",
                                 category_id="c1"))
    return events


# --- gold.model_metrics ------------------------------------------------------------------------------

@pytest.mark.parametrize("writer", ["deltalake", "spark"])
def test_metrics_merge_on_the_full_key_and_never_erase_another_jobs_rows(spark, fresh_cfg, writer):
    from delta.tables import DeltaTable

    fresh_cfg = dataclasses.replace(fresh_cfg, runs=dataclasses.replace(fresh_cfg.runs, record_writer=writer))
    day = D(2024, 3, 1)

    def m(job, metric, value, model="m", split="test", on=day):
        return Metric(on, job, "landing", model, split, "p", metric, value, 10)

    earlier = m("job_a", "auc", 0.3, on=D(2024, 2, 29))
    write_metrics(spark, fresh_cfg, [m("job_a", "auc", 0.5), m("job_a", "f1", 0.4), m("job_b", "auc", 0.9), earlier])
    # job_a re-runs the date with one figure changed and one new model; job_b is not mentioned.
    write_metrics(spark, fresh_cfg, [m("job_a", "auc", 0.6), m("job_a", "auc", 0.7, model="other")])
    got = {
        (r[S.JOB], r[S.MODEL], r[S.METRIC], r[S.RUN_DATE]): (r[S.VALUE], r[S.N_EXAMPLES])
        for r in _read(spark, catalog.MODEL_METRICS, fresh_cfg).collect()
    }
    assert got == {
        ("job_a", "m", "auc", day): (0.6, 10),
        ("job_a", "m", "f1", day): (0.4, 10),  # kept: a MERGE only touches the keys it is given
        ("job_a", "other", "auc", day): (0.7, 10),
        ("job_b", "m", "auc", day): (0.9, 10),
        ("job_a", "m", "auc", D(2024, 2, 29)): (0.3, 10),
    }
    last = DeltaTable.forPath(spark, catalog.MODEL_METRICS.location(fresh_cfg)).history(1).collect()[0]
    assert last["userMetadata"].startswith("shoplens gold.model_metrics ")  # tagged like every commit
    with pytest.raises(ValueError, match="duplicate"):
        write_metrics(spark, fresh_cfg, [m("job_a", "auc", 0.1), m("job_a", "auc", 0.2)])
    with pytest.raises(ValueError, match="NaN"):
        write_metrics(spark, fresh_cfg, [m("job_a", "auc", float("nan"))])
    assert write_metrics(spark, fresh_cfg, [m("job_c", "undefined_here", None)]) == 1


# --- BG/NBD ------------------------------------------------------------------------------------------

def test_bgnbd_recovers_the_parameters_it_simulated_from():
    # Not CDNOW's values (0.243, 4.414, 0.793, 2.426); customers observed 26 to 52 weeks.
    truth = (0.5, 6.0, 1.2, 3.0)
    rng = np.random.default_rng(3)
    ages = rng.integers(26 * 7, 52 * 7 + 1, 40_000) / 7
    x, t_x, age = bgnbd.simulate(truth, ages, seed=3)
    # Purchases on whole days, as the jobs see them; identical triples grouped, as the jobs do.
    groups = collections.Counter(zip(x, np.round(t_x * 7) / 7, age, strict=True))
    keys = list(groups)
    fitted = bgnbd.fit(*(np.array([k[i] for k in keys]) for i in range(3)), [groups[k] for k in keys])
    assert fitted.customers == 40_000 and fitted.groups < 40_000
    for got, want, tolerance in zip(fitted.params(), truth, (0.05, 0.05, 0.12, 0.12), strict=True):
        assert got == pytest.approx(want, rel=tolerance)
    # The grouped likelihood is the ungrouped one.
    params = fitted.params()
    ungrouped = bgnbd.log_likelihood(params, x, np.round(t_x * 7) / 7, age)
    assert fitted.log_likelihood == pytest.approx(ungrouped, rel=1e-9)
    assert np.all((bgnbd.p_alive(params, x, t_x, age) > 0) & (bgnbd.p_alive(params, x, t_x, age) <= 1))
    assert np.all(bgnbd.p_alive(params, np.zeros(3), np.zeros(3), np.array([1.0, 10, 50])) == 1.0)


def test_purchase_stats_follow_the_papers_conventions(spark):
    schema = "dataset string, user_id string, event_date date, orders long, spend decimal(18,2), refunds decimal(18,2)"
    money = Decimal
    rows = [
        # Ann: purchase days 1, 8 (two orders) and 15; a refund of 5 on day 15.
        ("landing", "ann", D(2024, 1, 1), 1, money("10.00"), money("0.00")),
        ("landing", "ann", D(2024, 1, 8), 2, money("30.00"), money("0.00")),
        ("landing", "ann", D(2024, 1, 15), 1, money("20.00"), money("5.00")),
        ("landing", "ann", D(2024, 1, 20), 1, money("99.00"), money("0.00")),  # after the snapshot
        ("landing", "bob", D(2024, 1, 3), 0, money("0.00"), money("0.00")),  # never bought
        ("landing", "cat", D(2024, 1, 4), 0, money("0.00"), money("12.00")),  # only returns
        ("landing", "dan", D(2024, 1, 5), 1, money("7.00"), money("0.00")),  # one purchase
        ("landing", "eve", D(2024, 1, 1), 1, money("10.00"), money("0.00")),  # a second day refunded in full
        ("landing", "eve", D(2024, 1, 2), 1, money("10.00"), money("15.00")),
    ]
    stats = purchase_stats(spark.createDataFrame(rows, schema), D(2024, 1, 15))
    got = {r[S.USER_ID]: r for r in stats.collect()}
    ann = got["ann"]
    assert (ann[S.REPEAT_PURCHASES], ann["t_x_days"], ann["age_days"]) == (2, 14, 14)
    assert (ann[S.RECENCY_WEEKS], ann[S.AGE_WEEKS]) == (2.0, 2.0)
    assert ann[S.AVG_REPEAT_VALUE] == Decimal("22.50")  # (30 + 20 - 5) / 2, the first day left out
    for user in ("bob", "cat"):
        assert not got[user][S.HAS_PURCHASED] and got[user][S.REPEAT_PURCHASES] is None
    assert (got["dan"][S.REPEAT_PURCHASES], got["dan"]["t_x_days"], got["dan"]["age_days"]) == (0, 0, 10)
    assert got["dan"][S.AVG_REPEAT_VALUE] is None
    assert got["eve"][S.AVG_REPEAT_VALUE] == Decimal("0.00")  # net repeat spend floored at 0
    triples = {(r[S.REPEAT_PURCHASES], r["t_x_days"], r["age_days"]): r["customers"]
               for r in grouped_triples(stats).collect()}
    assert triples == {(2, 14, 14): 1, (0, 0, 10): 1, (1, 1, 14): 1}


# --- churn: no leakage -------------------------------------------------------------------------------

def _examples(spark, cfg, events, snapshots, training, horizon):
    """Features of every snapshot, and labelled examples of the training snapshots and of all, as rows
    ordered by (snapshot, user). Computed with the jobs' pure transforms (no tables)."""
    silver = silver_frame(spark, events, cfg.shop.timezone)
    # Checkpointed: every later action would otherwise recompute the roll-up from Python rows.
    activity = daily_activity(silver, None, cfg.profiles.affinity_weights).localCheckpoint()
    profiles = None
    for t in snapshots:
        rows = profile_rows(activity, t, cfg.profiles)
        profiles = rows if profiles is None else profiles.unionByName(rows)
    features = with_features(profiles, cfg.profiles.windows_days).localCheckpoint()
    keys = [S.SNAPSHOT_DATE, S.USER_ID]
    return (
        _rows(features, keys),
        _rows(labelled(features, activity, training, horizon), keys),
        _rows(labelled(features, activity, snapshots, horizon), keys),
    )


def test_events_after_the_evaluation_snapshot_change_neither_features_nor_the_training_set(spark, cfg):
    cfg = _cfg(cfg)
    run_date = D(2024, 3, 25)
    evaluation, training = cfg.churn.evaluation_date(run_date), cfg.churn.training_dates(run_date)
    assert training == (D(2024, 2, 12), D(2024, 2, 26)) and evaluation == D(2024, 3, 11)
    snapshots = [*training, evaluation]
    before = [e for e in shop(60, 85, seed=1) if e.time.date() <= evaluation]
    # Everyone buys again after E, and newcomers arrive: every churn label of E would flip.
    buyers = sorted({e.user_id for e in before if e.event_type == "purchase"})
    later = [ev(f"late-{u}-{n}", f"2024-03-{12 + n}T09:00:00", u, "i1", "purchase", price=Decimal("5.00"), quantity=1)
             for n in range(3) for u in buyers]
    later += [ev(f"new-{n}", "2024-03-12T10:00:00", f"new-{n}", "i2", "purchase", price=Decimal("1.00")) for n in range(5)]
    features_a, train_a, all_a = _examples(spark, cfg, before, snapshots, training, cfg.churn.horizon_days)
    features_b, train_b, all_b = _examples(spark, cfg, before + later, snapshots, training, cfg.churn.horizon_days)
    assert features_a == features_b
    assert len(train_a) > 40 and {r[S.LABEL] for r in train_a} == {0.0, 1.0}
    assert train_a == train_b
    # The test can fail: the evaluation snapshot's own labels do see the later purchases.
    eval_a = [r for r in all_a if r[S.SNAPSHOT_DATE] == evaluation]
    eval_b = [r for r in all_b if r[S.SNAPSHOT_DATE] == evaluation]
    assert eval_a != eval_b and eval_b and {r[S.LABEL] for r in eval_b} == {0.0}


# --- the jobs ----------------------------------------------------------------------------------------

EDGE = [
    ev("bob-v", "2024-03-20T10:00:00", "bob", "i1", "view"),  # never bought
    ev("cat-r", "2024-03-20T11:00:00", "cat", "i2", "return", price=Decimal("30.00"), quantity=1),  # only returns
    ev("dan-p", "2024-03-21T12:00:00", "dan", "i3", "purchase", price=Decimal("9.00"), quantity=1),  # one purchase
]


def test_churn_and_value_jobs_write_defined_values_and_their_metrics(spark, fresh_cfg):
    cfg = _cfg(fresh_cfg)
    run_date = D(2024, 3, 25)
    write_all_silver(spark, cfg, shop(150, 85, seed=2) + EDGE)
    build_user_activity.run(spark, cfg, run_date, since=START)
    for snapshot in [*cfg.churn.training_dates(run_date), cfg.churn.evaluation_date(run_date), run_date]:
        build_user_profiles.run(spark, cfg, snapshot)
    # The snapshots present, as delta-rs and Spark find them (one date wanted but missing).
    wanted = [*cfg.churn.training_dates(run_date), run_date, D(2024, 1, 2)]
    present = {
        writer: sorted(
            (r[S.DATASET], r[S.SNAPSHOT_DATE])
            for r in build_churn_scores.present_snapshots(
                spark, dataclasses.replace(cfg, runs=dataclasses.replace(cfg.runs, record_writer=writer)), wanted
            )
        )
        for writer in ("deltalake", "spark")
    }
    assert present["deltalake"] == present["spark"] == [(S.DATASET_LANDING, d) for d in sorted(wanted[:-1])]
    # Before any fit, gold.churn_models exists, empty, for readers of the warehouse.
    assert build_churn_scores.run(spark, cfg, D(2024, 1, 20)).by_dataset == {}
    assert _read(spark, catalog.CHURN_MODELS, cfg).count() == 0
    summary = build_churn_scores.run(spark, cfg, run_date)
    build_customer_value.run(spark, cfg, run_date)

    figures = summary.by_dataset[S.DATASET_LANDING]
    for key in ("pr_auc", "roc_auc", "f1", "recency_baseline_pr_auc", "logreg_pr_auc", "positive_rate", "n_users"):
        assert figures[key] is not None, key
    assert 0 < figures["positive_rate"] < 1

    scores = _read(spark, catalog.CHURN_SCORES, cfg)
    _no_nan(scores)
    buyers_now = _read(spark, catalog.USER_PROFILES, cfg, (F.col(S.SNAPSHOT_DATE) == run_date)
                       & F.col(S.LAST_PURCHASE).isNotNull()).count()
    assert scores.count() == buyers_now  # every buyer of the run date, once
    got = {r[S.USER_ID]: r for r in scores.collect()}
    assert "bob" not in got and "cat" not in got and got["dan"][S.RECENCY_DAYS] == 4  # non-buyers are not scored
    assert all(0 <= r[S.CHURN_PROBABILITY] <= 1 for r in got.values())
    assert {r[S.RISK_BAND] for r in got.values()} <= {"high", "medium", "low"}
    importance = _read(spark, catalog.CHURN_FEATURE_IMPORTANCE, cfg)
    gbt_total = importance.where(F.col(S.MODEL) == "gbt").agg(F.sum(S.IMPORTANCE)).first()[0]
    assert gbt_total == pytest.approx(1.0)

    metrics = _read(spark, catalog.MODEL_METRICS, cfg)
    _no_nan(metrics)
    churn_keys = {(r[S.MODEL], r[S.SPLIT], r[S.METRIC]) for r in metrics.where(F.col(S.JOB) == "build_churn_scores").collect()}
    assert {("gbt", "test", "pr_auc"), ("logreg", "test", "f1"), ("recency_baseline", "test", "roc_auc")} <= churn_keys
    value_metrics = {r[S.METRIC] for r in metrics.where(F.col(S.JOB) == "build_customer_value").collect()}
    assert {"r", "alpha", "a", "b", "log_likelihood", "p", "q", "v"} <= value_metrics

    value = _read(spark, catalog.CUSTOMER_VALUE, cfg)
    _no_nan(value)
    got = {r[S.USER_ID]: r for r in value.collect()}
    for user in ("bob", "cat"):  # no purchase, only returns: not customers yet, no model values
        row = got[user]
        assert not row[S.HAS_PURCHASED] and (row[S.P_ALIVE], row[S.EXPECTED_VALUE]) == (None, None)
    dan = got["dan"]  # one purchase: alive by the model's definition, population mean spend
    assert dan[S.REPEAT_PURCHASES] == 0 and dan[S.P_ALIVE] == 1.0
    assert dan[S.EXPECTED_PURCHASES] > 0 and dan[S.EXPECTED_VALUE] > 0
    buyers = value.where(F.col(S.HAS_PURCHASED))
    assert buyers.where(F.col(S.P_ALIVE).isNull() | F.col(S.EXPECTED_VALUE).isNull()).count() == 0

    # The next night (within churn.refit_every_days) scores with the models of run_date: no fit, no
    # evaluation, no new metrics; its scores are those models' predictions on its own snapshot.
    (fit,) = _read(spark, catalog.CHURN_MODELS, cfg).collect()
    assert (fit[S.DATASET], fit[S.FIT_DATE], fit[S.EVALUATION_SNAPSHOT]) == (
        S.DATASET_LANDING, run_date, cfg.churn.evaluation_date(run_date))
    next_day = run_date + dt.timedelta(days=1)
    build_user_profiles.run(spark, cfg, next_day)
    reused = build_churn_scores.run(spark, cfg, next_day)
    assert (reused.by_dataset, reused.reused) == ({}, {S.DATASET_LANDING: run_date})
    assert _read(spark, catalog.MODEL_METRICS, cfg).count() == metrics.count()
    assert _read(spark, catalog.CHURN_MODELS, cfg).count() == 1
    later = _read(spark, catalog.CHURN_SCORES, cfg, F.col(S.RUN_DATE) == next_day)
    assert later.count() == _read(spark, catalog.USER_PROFILES, cfg, (F.col(S.SNAPSHOT_DATE) == next_day)
                                  & F.col(S.LAST_PURCHASE).isNotNull()).count() > 0
    assert {r[S.EVALUATION_SNAPSHOT] for r in later.collect()} == {fit[S.EVALUATION_SNAPSHOT]}
    model = PipelineModel.load(fit[S.GBT_PATH])
    current = with_features(_read(spark, catalog.USER_PROFILES, cfg, F.col(S.SNAPSHOT_DATE) == next_day),
                            cfg.profiles.windows_days)
    expected = build_churn_scores.score_rows(model, current, next_day, fit[S.EVALUATION_SNAPSHOT], cfg.churn)
    assert _rows(later, [S.USER_ID]) == _rows(expected, [S.USER_ID])
    # Its feature importances are the fit's, under its own date.
    ranked = [S.MODEL, S.FEATURE, S.IMPORTANCE, S.RANK]
    importance = _read(spark, catalog.CHURN_FEATURE_IMPORTANCE, cfg)
    by_night = {
        night: sorted(tuple(r[c] for c in ranked) for r in importance.where(F.col(S.RUN_DATE) == night).collect())
        for night in (run_date, next_day)
    }
    assert by_night[next_day] == by_night[run_date] and len(by_night[run_date]) > 0
    # Other settings are another model: that night does not reuse the fit (and, lacking the night's
    # own training snapshots, fits nothing).
    other = dataclasses.replace(cfg, churn=dataclasses.replace(cfg.churn, logreg_reg_param=0.5))
    assert build_churn_scores.run(spark, other, next_day).reused == {}

    # Too early for labelled history (no profile snapshots 14 and 28 days before E): no fit, an
    # empty slice, no metrics; the run date's slice above is untouched.
    early = build_churn_scores.run(spark, cfg, D(2024, 1, 20))
    assert early.by_dataset == {}
    assert _read(spark, catalog.CHURN_SCORES, cfg, F.col(S.RUN_DATE) == D(2024, 1, 20)).count() == 0
    assert _read(spark, catalog.CHURN_SCORES, cfg, F.col(S.RUN_DATE) == run_date).count() == buyers_now
    assert _read(spark, catalog.MODEL_METRICS, cfg).count() == metrics.count()


def test_evaluation_figures_by_hand_and_no_auc_on_a_single_class(spark):
    rows = [(1.0, 0.9), (1.0, 0.4), (0.0, 0.6), (0.0, 0.1)]
    scored = spark.createDataFrame(rows, [S.LABEL, "s"])
    got = evaluate.figures(scored, "s", F.col("s") >= 0.5)
    # Pairs (positive, negative) ranked right: (0.9, 0.6), (0.9, 0.1), (0.4, 0.1); wrong: (0.4, 0.6).
    assert got["roc_auc"] == pytest.approx(0.75)
    assert got["n"] == 4 and got["positive_rate"] == 0.5
    assert (got["precision"], got["recall"], got["f1"]) == (0.5, 0.5, 0.5)
    single = evaluate.figures(scored.where(F.col(S.LABEL) == 1.0), "s", F.col("s") >= 0.5)
    assert single["pr_auc"] is None and single["roc_auc"] is None and single["recall"] == 0.5
    empty = evaluate.figures(scored.where(F.lit(False)), "s", F.col("s") >= 0.5)
    assert empty["pr_auc"] is None and empty["n"] == 0 and empty["positive_rate"] is None


def test_too_few_customers_give_no_fit_and_null_values_not_nan():
    few = [Triple(0, 0, 10, 2), Triple(1, 3, 12, 1)]
    assert fit_value(few, [], horizon_weeks=52, min_customers=10, max_iter=100) == ValueFit(None, None, {})
