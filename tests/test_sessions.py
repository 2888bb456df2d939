"""gold.sessions: the cut rule on typed rows, and run-by-run exactness against a full rebuild."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import random
from decimal import Decimal

import pytest
from pyspark.testing import assertDataFrameEqual

from shoplens import catalog, sessions
from shoplens import schemas as S
from shoplens.config import ConfigError, load_config
from shoplens.jobs import build_sessions

from .conftest import CONF_DIR
from .synthetic_silver import ev, generate, reference_sessions, silver_frame, write_all_silver, write_nightly_silver

UTC = dt.UTC
MINUTE_US = 60 * 1_000_000


def _t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def _naive(text: str) -> dt.datetime:
    """A UTC time as PySpark collects it (naive, in this process's zone: UTC here, as in the JVM)."""
    return dt.datetime.fromisoformat(text)


def _session_id(actor: str, start: str, first_event: str, dataset: str = "landing") -> str:
    micros = int(_t(start).timestamp() * 1_000_000)
    return hashlib.sha256(f"{dataset}\n{actor}\n{micros}\n{first_event}".encode()).hexdigest()


def test_sessions_cut_by_gap_and_max_length_with_their_measures(spark):
    events = [
        ev("e1", "2024-01-01T10:00:00", item="i1", category_id="c1"),
        ev("e3", "2024-01-01T10:10:00", item="i2", event_type="purchase", price=Decimal("5.00"), quantity=2),
        ev("e2", "2024-01-01T10:10:00", item="i2", event_type="cart", category_id="c2", price=Decimal("5.00")),
        # 30 min 1 s after e3: a new activity (and session).
        ev("e4", "2024-01-01T10:40:01", item="i3"),
        ev("e5", "2024-01-01T11:05:00", item="i1"),
        ev("e6", "2024-01-01T11:30:00", item="i4", is_bot=True),
        ev("e7", "2024-01-01T11:55:00", item="i1"),
        ev("e8", "2024-01-01T12:20:00", item="i2"),
        # Exactly max length (2 h) after the activity started: the next chunk, a new session.
        ev("e9", "2024-01-01T12:40:01", item="i5", event_type="purchase"),
        ev("e10", "2024-01-01T12:41:00", item="i6"),
        # Anonymous, delivered twice.
        ev("a1", "2024-01-01T09:00:00", user=None, session_key="k1", item="i9"),
        ev("a1", "2024-01-01T09:00:00", user=None, session_key="k1", item="i9"),
        # An identified user's session keys do not split it.
        ev("v1", "2024-01-01T09:00:00", user="u2", session_key="x", item="i1"),
        ev("v2", "2024-01-01T09:01:00", user="u2", session_key="y", item="i1"),
    ]
    random.Random(3).shuffle(events)
    silver = silver_frame(spark, events, "UTC")
    marked = sessions.mark_sessions(sessions.actor_events(silver), 30 * MINUTE_US, 120 * MINUTE_US)

    got = catalog.SESSIONS.conform(sessions.session_rows(marked, "UTC"))

    s1, s2, s3 = (
        _session_id("u:u1", "2024-01-01T10:00:00", "e1"),
        _session_id("u:u1", "2024-01-01T10:40:01", "e4"),
        _session_id("u:u1", "2024-01-01T12:40:01", "e9"),
    )
    s4, s5 = _session_id("s:k1", "2024-01-01T09:00:00", "a1"), _session_id("u:u2", "2024-01-01T09:00:00", "v1")
    d = dt.date(2024, 1, 1)
    expected = spark.createDataFrame(
        [
            (s1, "landing", "u1", None, _t("2024-01-01T10:00:00"), _t("2024-01-01T10:10:00"), 600, 3, 2, 1, 1, 1,
             True, Decimal("10.00"), "i1", "i2", ["c1", "c2"], False, _t("2024-01-01T10:00:00"), d),
            (s2, "landing", "u1", None, _t("2024-01-01T10:40:01"), _t("2024-01-01T12:20:00"), 5999, 5, 4, 5, 0, 0,
             False, Decimal("0.00"), "i3", "i2", [], True, _t("2024-01-01T10:40:01"), d),
            (s3, "landing", "u1", None, _t("2024-01-01T12:40:01"), _t("2024-01-01T12:41:00"), 59, 2, 2, 1, 0, 1,
             True, None, "i5", "i6", [], False, _t("2024-01-01T10:40:01"), d),
            (s4, "landing", None, "k1", _t("2024-01-01T09:00:00"), _t("2024-01-01T09:00:00"), 0, 1, 1, 1, 0, 0,
             False, Decimal("0.00"), "i9", "i9", [], False, _t("2024-01-01T09:00:00"), d),
            (s5, "landing", "u2", None, _t("2024-01-01T09:00:00"), _t("2024-01-01T09:01:00"), 60, 2, 1, 2, 0, 0,
             False, Decimal("0.00"), "i1", "i1", [], False, _t("2024-01-01T09:00:00"), d),
        ],
        S.SESSIONS,
    )
    assertDataFrameEqual(got, expected)

    assigned = sessions.assign_sessions(marked)
    positions = {r[S.EVENT_ID]: (r[S.SESSION_ID], r[S.POSITION]) for r in sessions.session_event_rows(assigned, "UTC").collect()}
    assert positions == {
        "e1": (s1, 1), "e2": (s1, 2), "e3": (s1, 3),
        "e4": (s2, 1), "e5": (s2, 2), "e6": (s2, 3), "e7": (s2, 4), "e8": (s2, 5),
        "e9": (s3, 1), "e10": (s3, 2), "a1": (s4, 1), "v1": (s5, 1), "v2": (s5, 2),
    }


def test_a_run_continues_the_activity_of_committed_sessions(spark):
    """With state (the last final session ends 11:50, its activity began 10:00), an event 20 min
    later joins that activity: chunks of 2 h still count from 10:00, so 12:10 .. 13:45 share one."""
    events = [ev("e1", "2024-01-01T11:50:00"), ev("e2", "2024-01-01T12:10:00"), ev("e3", "2024-01-01T12:30:00"),
              ev("e5", "2024-01-01T12:55:00"), ev("e6", "2024-01-01T13:20:00"), ev("e7", "2024-01-01T13:45:00"),
              ev("e4", "2024-01-01T14:00:01")]
    state = spark.createDataFrame(
        [("landing", "u:u1", _t("2024-01-01T11:50:00"), _t("2024-01-01T10:00:00"))],
        f"{S.DATASET} string, {sessions.ACTOR} string, {sessions.LAST_END} timestamp, "
        f"{sessions.LAST_ACTIVITY_START} timestamp",
    )
    assigned = sessions.assign_sessions(sessions.mark_sessions(
        sessions.actor_events(silver_frame(spark, events, "UTC")), 30 * MINUTE_US, 120 * MINUTE_US, state
    ))
    got = sorted((r[S.EVENT_ID], r[S.START_TIME], r[S.ACTIVITY_START], r[S.POSITION]) for r in assigned.collect())
    assert got == [
        ("e2", _naive("2024-01-01T12:10:00"), _naive("2024-01-01T10:00:00"), 1),
        ("e3", _naive("2024-01-01T12:10:00"), _naive("2024-01-01T10:00:00"), 2),
        # 14:00:01 is past 14:00, the end of the activity's second 2-hour chunk.
        ("e4", _naive("2024-01-01T14:00:01"), _naive("2024-01-01T10:00:00"), 1),
        ("e5", _naive("2024-01-01T12:10:00"), _naive("2024-01-01T10:00:00"), 3),
        ("e6", _naive("2024-01-01T12:10:00"), _naive("2024-01-01T10:00:00"), 4),
        ("e7", _naive("2024-01-01T12:10:00"), _naive("2024-01-01T10:00:00"), 5),
    ]


def by_id_user(events):
    return {e.event_id: e.user_id for e in events}


def _table(spark, spec, cfg):
    return spark.read.format("delta").load(spec.location(cfg))


@pytest.mark.parametrize(
    ("timezone", "max_hours", "start", "bot_start"),
    [
        pytest.param("UTC", 12, dt.date(2024, 1, 1), dt.timedelta(days=2, hours=18), id="utc-12h"),
        # 24-hour sessions in a Berlin shop: the bot's first session starts at 23:55 on 30 March and,
        # 31 March lasting 23 hours, ends on 1 April: two dates after its start date.
        pytest.param("Europe/Berlin", 24, dt.date(2024, 3, 28), dt.timedelta(days=2, hours=22, minutes=55),
                     id="berlin-24h-dst"),
    ],
)
def test_day_by_day_equals_a_full_rebuild_and_the_reference_rule(
    spark, fresh_cfg, tmp_path, timezone, max_hours, start, bot_start
):
    cfg = dataclasses.replace(
        fresh_cfg,
        shop=dataclasses.replace(fresh_cfg.shop, timezone=timezone),
        # One late day: sessions become final within the few days this test runs.
        silver=dataclasses.replace(fresh_cfg.silver, late_days=1),
        sessions=dataclasses.replace(fresh_cfg.sessions, max_length_hours=max_hours),
    )
    days = 5  # of events (UTC dates), on all but day 1; local dates reach one more day
    events = generate(start, days, seed=7, empty_days=[1], late_days=1, bot_start=bot_start)
    # Every bot event lands a day late: late events inside long sessions that span dates.
    last_arrival = start + dt.timedelta(days=days)
    events = [
        dataclasses.replace(e, arrival=min(e.event_date(timezone) + dt.timedelta(days=1), last_arrival))
        if e.user_id == "user-bot" else e
        for e in events
    ]
    nightly = cfg
    for offset in range(days + 2):  # and a last day when nothing happens and nothing arrives
        run_date = start + dt.timedelta(days=offset)
        write_nightly_silver(spark, nightly, events, run_date)
        summary = build_sessions.run(spark, nightly, run_date)
        assert summary["mode"] == ("full" if offset == 0 else "incremental")
        if offset == days:
            before_empty_day = (
                _table(spark, catalog.SESSIONS, nightly).collect(),
                _table(spark, catalog.SESSION_EVENTS, nightly).collect(),
            )
    last = start + dt.timedelta(days=days + 1)

    # All at once, from the same events delivered out of order and partly twice.
    rebuilt = dataclasses.replace(
        cfg, paths=dataclasses.replace(cfg.paths, warehouse=str(tmp_path / "rebuilt"))
    )
    arrived = events
    rng = random.Random(11)
    messy = arrived + rng.sample(arrived, len(arrived) // 10)
    rng.shuffle(messy)
    write_all_silver(spark, rebuilt, messy)
    assert build_sessions.run(spark, rebuilt, last, full_rebuild=True)["mode"] == "full"

    for spec in (catalog.SESSIONS, catalog.SESSION_EVENTS):
        assertDataFrameEqual(_table(spark, spec, nightly), _table(spark, spec, rebuilt))
    # The day when nothing arrived changed nothing.
    assertDataFrameEqual(_table(spark, catalog.SESSIONS, nightly), before_empty_day[0])
    assertDataFrameEqual(_table(spark, catalog.SESSION_EVENTS, nightly), before_empty_day[1])

    # Every event is in exactly one session, and the sessions are the rule's.
    mapping = _table(spark, catalog.SESSION_EVENTS, nightly)
    pairs = [(r[S.EVENT_ID], r[S.SESSION_ID]) for r in mapping.select(S.EVENT_ID, S.SESSION_ID).collect()]
    assert sorted(e for e, _ in pairs) == sorted({e.event_id for e in arrived})
    groups: dict[str, set[str]] = {}
    for event_id, session_id in pairs:
        groups.setdefault(session_id, set()).add(event_id)
    expected = reference_sessions(arrived, dt.timedelta(minutes=30), dt.timedelta(hours=max_hours))
    assert {frozenset(g) for g in groups.values()} == expected
    # The bot's 40-hour activity (an event every 20 minutes) was cut by length.
    bot_sessions = {s for e, s in pairs if by_id_user(arrived)[e] == "user-bot"}
    assert len(bot_sessions) == 40 // max_hours + 1

    # Time order: positions follow (time, id); start, end and duration agree with the events.
    by_id = {e.event_id: e for e in arrived}
    table = {r[S.SESSION_ID]: r for r in _table(spark, catalog.SESSIONS, nightly).collect()}
    assert set(table) == set(groups)
    for row in mapping.collect():
        session = table[row[S.SESSION_ID]]
        members = sorted((by_id[e].time, e) for e in groups[row[S.SESSION_ID]])
        assert members[row[S.POSITION] - 1][1] == row[S.EVENT_ID]
        assert session[S.START_TIME] == members[0][0].replace(tzinfo=None)
        assert session[S.END_TIME] == members[-1][0].replace(tzinfo=None)
        assert session[S.END_TIME] - session[S.START_TIME] < dt.timedelta(hours=max_hours)
        assert session[S.N_EVENTS] == len(members)


def test_imported_datasets_are_rebuilt_whole_and_sequence_files_get_no_sessions(spark, fresh_cfg):
    landing = [ev("l1", "2024-01-01T10:00:00"), ev("l2", "2024-01-01T10:05:00")]
    imported = [dataclasses.replace(e, dataset="taobao") for e in
                (ev("t1", "2017-11-25T10:00:00"), ev("t2", "2017-11-25T11:00:00"), ev("t3", "2017-12-01T08:00:00"))]
    write_all_silver(spark, fresh_cfg, landing)
    write_all_silver(spark, fresh_cfg, imported, "taobao")
    build_sessions.run(spark, fresh_cfg, dt.date(2024, 1, 1))
    assert build_sessions.run(spark, fresh_cfg, dt.date(2024, 1, 1), "taobao")["mode"] == "full"
    assert build_sessions.run(spark, fresh_cfg, dt.date(2024, 1, 1), "taobao")["sessions"] == 3  # a re-run

    counts = {r[S.DATASET]: r["count"] for r in _table(spark, catalog.SESSIONS, fresh_cfg).groupBy(S.DATASET).count().collect()}
    assert counts == {"landing": 1, "taobao": 3}
    with pytest.raises(build_sessions.DatasetExcluded, match="sequences"):
        build_sessions.run(spark, fresh_cfg, dt.date(2024, 1, 1), "sequences")


@pytest.mark.parametrize("hours", [0, 24.5])
def test_max_length_beyond_a_day_is_rejected(hours):
    with pytest.raises(ConfigError, match="max_length_hours"):
        load_config("local", CONF_DIR, [f"sessions.max_length_hours={hours}"])


def test_incremental_plan_owns_start_dates_after_the_final_ones(cfg):
    r = dt.date(2024, 1, 10)  # late_days 3: W = 01-07; 12 h sessions spill one day: final through 01-05
    p = build_sessions.plan(cfg, r, "landing", is_incremental=True)
    assert (p.events_from, p.events_to, p.state_from, p.state_to) == (
        dt.date(2024, 1, 6), r, dt.date(2024, 1, 5), dt.date(2024, 1, 5)
    )
    assert p.slice == {S.DATASET: "landing", S.START_DATE: (dt.date(2024, 1, 6), r)}


def test_the_bench_duckdb_sql_cuts_the_same_sessions_as_spark(spark, cfg, tmp_path):
    import duckdb

    from shoplens.bench_sessions import INPUT_COLUMNS, count_shuffles, duckdb_sql, spark_sessions

    events = generate(dt.date(2024, 1, 1), 3, seed=5, late_share=0)
    events += events[:50]  # copies count once in both engines
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")  # as the bench writes it
    try:
        silver_frame(spark, events, "UTC").select(*INPUT_COLUMNS).write.parquet(str(tmp_path / "input"))
    finally:
        spark.conf.unset("spark.sql.parquet.outputTimestampType")
    sessions_df = spark_sessions(spark, cfg, str(tmp_path / "input"))
    assert count_shuffles(sessions_df) == 1
    sessions_df.write.parquet(str(tmp_path / "spark"))

    def duck(gap_minutes):
        other = dataclasses.replace(cfg, sessions=dataclasses.replace(cfg.sessions, gap_minutes=gap_minutes))
        out = tmp_path / f"duck-{gap_minutes}.parquet"
        duckdb.sql(duckdb_sql(str(tmp_path / "input"), str(out), other))
        return {tuple(r) for r in duckdb.sql(f"SELECT session_id, n_events FROM read_parquet('{out}')").fetchall()}

    spark_rows = {(r[S.SESSION_ID], r[S.N_EVENTS]) for r in spark.read.parquet(str(tmp_path / "spark")).collect()}
    assert duck(30) == spark_rows
    assert duck(29) != spark_rows  # the comparison can fail: the generator places gaps at 29:59..30:01
