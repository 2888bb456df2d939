"""Public-format adapters and load_history: exact silver rows, quarantine reasons, reconciliation,
coexistence with the nightly job, and a bounded load of each real file in ../shared/data."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hashlib
import hmac
import itertools
import json
from decimal import Decimal
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shoplens import catalog
from shoplens import schemas as S
from shoplens.ingest import adapters, rules
from shoplens.ingest.pseudonymise import DEMO_KEY
from shoplens.jobs import build_silver_events, ingest_landing, load_history

from .conftest import ROOT

UTC = dt.UTC
PUBLIC_DATA = ROOT.parent / "shared" / "data"
needs_public_data = pytest.mark.skipif(not PUBLIC_DATA.is_dir(), reason=f"public datasets not found at {PUBLIC_DATA}")


@pytest.fixture()
def import_cfg(fresh_cfg):
    """Tiny samples break every rule once: let any share of rejects through, the counts are asserted."""
    return dataclasses.replace(
        fresh_cfg,
        silver=dataclasses.replace(fresh_cfg.silver, max_reject_share=1.0),
        ingest=dataclasses.replace(fresh_cfg.ingest, max_malformed_share=1.0),
    )


def _write(tmp_path: Path, name: str, lines: list[str], final_newline: bool = True) -> Path:
    path = tmp_path / "input" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines) + ("\n" if final_newline else ""), encoding="utf-8")
    return path


def _uri(path: Path) -> str:
    return f"file:{path.resolve()}"  # Spark's form of a local file's path


def _id(fmt: str, line: str, occurrence: int = 1, position: int = 0) -> str:
    return hashlib.sha256(f"{fmt}\n{occurrence}\n{position}\n{line}".encode()).hexdigest()


def _pseudonym(user: str | None) -> str | None:
    return None if user is None else hmac.new(DEMO_KEY, user.encode(), hashlib.sha256).hexdigest()


def _event(fmt, path, run_date, line, time, event_type, source_event_type, user, item, occurrence=1, position=0, **other):
    row = dict.fromkeys(catalog.SILVER_EVENTS.columns)
    row.update(
        event_id=_id(fmt, line, occurrence, position),
        event_time=time,
        event_date=time.astimezone(UTC).date(),
        event_type=event_type,
        source_event_type=source_event_type,
        user_id=_pseudonym(user),
        item_id=item,
        is_bot=False,
        dataset=fmt,
        run_date=run_date,
        source_file=_uri(path),
    )
    row.update(other)
    return tuple(row[c] for c in catalog.SILVER_EVENTS.columns)


def _table(spark, cfg, spec):
    return spark.read.format("delta").load(spec.location(cfg))


def _silver_events(spark, cfg, fmt):
    return _table(spark, cfg, catalog.SILVER_EVENTS).where(F.col(S.DATASET) == fmt)


def _quarantine(spark, cfg, fmt):
    return _table(spark, cfg, catalog.QUARANTINE).where(F.col(S.STAGE) == f"import:{fmt}")


def _expected_quarantine(spark, path, run_date, fmt, rows):
    return spark.createDataFrame(
        [(run_date, f"import:{fmt}", _uri(path), reason, line) for reason, line in rows], S.QUARANTINE
    )


def _assert_reconciled(summary, raw_lines, header_lines, records):
    assert (summary["raw_lines"], summary["header_lines"], summary["records"]) == (raw_lines, header_lines, records)
    assert summary["records"] == summary["accepted"] + summary["quarantined"] + summary["duplicates"]
    assert summary["reconciled"] is True


# --- Taobao -----------------------------------------------------------------------------------------

TAOBAO_R = dt.date(2017, 12, 4)
TAOBAO_LINES = [
    "1,2268318,2520377,pv,1511544070",
    "1,2268318,2520377,pv,1511544070",  # the same action twice: two events, two ids
    "2,5002615,2520377,buy,1511616481",
    "3,100,200,teleport,1511616481",
    "4,101,201,cart,yesterday",
    "5,102,202,fav,1893456000",  # 2030: after the run date
    "6,103,203,fav,1505088000",  # 2017-09-11, long before R: still accepted, the history is whole
    "100370,1968385,1875258,pv",  # truncated like the real file's last line, no newline after it
]


def test_taobao_rows_ids_and_truncated_line(spark, import_cfg, tmp_path):
    path = _write(tmp_path, "UserBehavior.csv", TAOBAO_LINES, final_newline=False)
    summary = load_history.run(spark, import_cfg, "taobao", path, TAOBAO_R, demo=True)

    def at(ts):
        return dt.datetime.fromtimestamp(ts, UTC)

    line0, _, line2, *_ = TAOBAO_LINES
    expected = [
        _event("taobao", path, TAOBAO_R, line0, at(1511544070), "view", "pv", "1", "2268318", category_id="2520377"),
        _event("taobao", path, TAOBAO_R, line0, at(1511544070), "view", "pv", "1", "2268318", occurrence=2, category_id="2520377"),
        _event("taobao", path, TAOBAO_R, line2, at(1511616481), "purchase", "buy", "2", "5002615", category_id="2520377"),
        _event("taobao", path, TAOBAO_R, TAOBAO_LINES[6], at(1505088000), "fav", "fav", "6", "103", category_id="203"),
    ]
    assertDataFrameEqual(_silver_events(spark, import_cfg, "taobao"), spark.createDataFrame(expected, S.SILVER_EVENTS))
    assertDataFrameEqual(
        _quarantine(spark, import_cfg, "taobao"),
        _expected_quarantine(spark, path, TAOBAO_R, "taobao", [
            ("unknown_event_type", TAOBAO_LINES[3]),
            ("malformed_event_time", TAOBAO_LINES[4]),
            ("future_event_time", TAOBAO_LINES[5]),
            ("malformed_record", TAOBAO_LINES[7]),
        ]),
    )
    _assert_reconciled(summary, raw_lines=8, header_lines=0, records=8)
    assert summary["quarantined_by_reason"] == {
        "future_event_time": 1, "malformed_event_time": 1, "malformed_record": 1, "unknown_event_type": 1,
    }
    assert (summary["accepted"], summary["duplicates"], summary["first_event_date"]) == (4, 0, "2017-09-11")


# --- Online Retail ------------------------------------------------------------------------------------

RETAIL_R = dt.date(2011, 12, 10)
RETAIL_I = [
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country",
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850,United Kingdom",
    '536365,71053,"WHITE METAL LANTERN, LARGE",6,12/1/2010 8:26,3.39,17850,United Kingdom',
    "C536379,D,Discount,-1,12/1/2010 9:41,27.5,14527,United Kingdom",
    "536414,22139,,56,12/1/2010 11:52,0,,United Kingdom",
    "536589,21777,Unknown,-10,12/1/2010 16:50,0,,United Kingdom",
    "A563186,B,Adjust bad debt,1,8/12/2011 14:51,-11062.06,,United Kingdom",
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850,United Kingdom",
    "536366,22633,HAND WARMER UNION JACK,6,12/1/2010 8:28",
]
RETAIL_II = [
    "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country",
    "489434,85048,15CM CHRISTMAS GLASS BALL 20 LIGHTS,12,2010-06-01 10:00:00,6.95,13085.0,United Kingdom",
    "C489449,22087,PAPER BUNTING WHITE LACE,-12,2010-06-01 10:00:00,2.95,16321.0,Australia",
]


def _retail_event(path, line, time, event_type, user, item, quantity, price, order, occurrence=1):
    return _event(
        "online_retail", path, RETAIL_R, line, time, event_type, event_type, user, item, occurrence=occurrence,
        session_key=None if user else order, quantity=quantity, price=Decimal(price), order_id=order,
    )


def test_online_retail_csv_both_releases_returns_and_guests(spark, import_cfg, tmp_path):
    retail_i = _write(tmp_path, "online_retail.csv", RETAIL_I)
    retail_ii = _write(tmp_path, "online_retail_II.csv", RETAIL_II)
    summary = load_history.run(spark, import_cfg, "online_retail", tmp_path / "input", RETAIL_R, demo=True)

    winter = dt.datetime(2010, 12, 1, 8, 26, tzinfo=UTC)  # GMT: UK wall clock = UTC
    summer = dt.datetime(2010, 6, 1, 9, 0, tzinfo=UTC)  # BST: 10:00 in London is 09:00 UTC
    expected = [
        _retail_event(retail_i, RETAIL_I[1], winter, "purchase", "17850", "85123A", 6, "2.55", "536365"),
        _retail_event(retail_i, RETAIL_I[1], winter, "purchase", "17850", "85123A", 6, "2.55", "536365", occurrence=2),
        _retail_event(retail_i, RETAIL_I[2], winter, "purchase", "17850", "71053", 6, "3.39", "536365"),
        _retail_event(retail_i, RETAIL_I[3], winter.replace(hour=9, minute=41), "return", "14527", "D", 1, "27.50", "C536379"),
        _retail_event(retail_i, RETAIL_I[4], winter.replace(hour=11, minute=52), "purchase", None, "22139", 56, "0.00", "536414"),
        _retail_event(retail_ii, RETAIL_II[1], summer, "purchase", "13085", "85048", 12, "6.95", "489434"),
        _retail_event(retail_ii, RETAIL_II[2], summer, "return", "16321", "22087", 12, "2.95", "C489449"),
    ]
    assertDataFrameEqual(
        _silver_events(spark, import_cfg, "online_retail"), spark.createDataFrame(expected, S.SILVER_EVENTS)
    )
    expected_quarantine = _expected_quarantine(spark, retail_i, RETAIL_R, "online_retail", [
        ("invalid_quantity", RETAIL_I[5]),  # a negative quantity outside a cancellation: a stock adjustment
        ("negative_price", RETAIL_I[6]),
        ("malformed_record", RETAIL_I[8]),
    ])
    assertDataFrameEqual(_quarantine(spark, import_cfg, "online_retail"), expected_quarantine)
    _assert_reconciled(summary, raw_lines=12, header_lines=2, records=10)
    assert summary["reviews"] == 0


def test_online_retail_parquet_with_either_column_names(spark, import_cfg, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def table(names):
        return pa.table({
            names[0]: ["536365", "C536379", "536414"],
            "StockCode": ["85123A", "D", "22139"],
            "Description": ["WHITE HANGING HEART, T-LIGHT HOLDER", "Discount", None],
            "Quantity": pa.array([6, -1, 56], pa.int64()),
            "InvoiceDate": pa.array([dt.datetime(2010, 12, 1, 8, 26)] * 3, pa.timestamp("us")),
            names[1]: [2.55, 27.5, 0.0],
            names[2]: [17850.0, 14527.0, None],
            "Country": ["United Kingdom"] * 3,
        })

    time = dt.datetime(2010, 12, 1, 8, 26, tzinfo=UTC)
    for names in (("InvoiceNo", "UnitPrice", "CustomerID"), ("Invoice", "Price", "Customer ID")):
        path = tmp_path / f"{names[0]}.parquet"
        pq.write_table(table(names), path)
        summary = load_history.run(spark, import_cfg, "online_retail", path, RETAIL_R, demo=True)
        # Parquet rows are kept in quarantine and hashed as CSV lines in the canonical field order.
        lines = [
            '536365,85123A,"WHITE HANGING HEART, T-LIGHT HOLDER",6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom',
            "C536379,D,Discount,-1,2010-12-01 08:26:00,27.5,14527.0,United Kingdom",
            "536414,22139,,56,2010-12-01 08:26:00,0.0,,United Kingdom",
        ]
        expected = [
            _retail_event(path, lines[0], time, "purchase", "17850", "85123A", 6, "2.55", "536365"),
            _retail_event(path, lines[1], time, "return", "14527", "D", 1, "27.50", "C536379"),
            _retail_event(path, lines[2], time, "purchase", None, "22139", 56, "0.00", "536414"),
        ]
        assertDataFrameEqual(
            _silver_events(spark, import_cfg, "online_retail"), spark.createDataFrame(expected, S.SILVER_EVENTS)
        )
        _assert_reconciled(summary, raw_lines=3, header_lines=0, records=3)


# --- MovieLens, sequences, Diginetica ----------------------------------------------------------------------

ML_R = dt.date(1998, 5, 1)
ML_LINES = ["196\t242\t3\t881250949", "186\t302\t6\t891717742", "22\t377\t1", "244\t51\t2.0\t880606923"]


def test_movielens_ratings_become_reviews_without_text(spark, import_cfg, tmp_path):
    path = _write(tmp_path, "u.data", ML_LINES)
    summary = load_history.run(spark, import_cfg, "movielens", path, ML_R, demo=True)

    def review(line, ts, user, item, rating):
        return _event(
            "movielens", path, ML_R, line, dt.datetime.fromtimestamp(ts, UTC), "review", "rating", user, item,
            rating=rating,
        )

    expected = [review(ML_LINES[0], 881250949, "196", "242", 3), review(ML_LINES[3], 880606923, "244", "51", 2)]
    events = _silver_events(spark, import_cfg, "movielens")
    assertDataFrameEqual(events, spark.createDataFrame(expected, S.SILVER_EVENTS))
    reviews = _table(spark, import_cfg, catalog.SILVER_REVIEWS)
    assertDataFrameEqual(reviews, catalog.SILVER_REVIEWS.conform(events.withColumn(S.REVIEW_TEXT, F.lit(None))))
    assertDataFrameEqual(
        _quarantine(spark, import_cfg, "movielens"),
        _expected_quarantine(spark, path, ML_R, "movielens", [
            ("invalid_rating", ML_LINES[1]), ("malformed_record", ML_LINES[2]),
        ]),
    )
    _assert_reconciled(summary, raw_lines=4, header_lines=0, records=4)
    assert summary["reviews"] == 2


SEQ_R = dt.date(2024, 1, 1)
SEQ_LINES = ["1 11 12 13", "2 60", "3", "1 11 12 13", ""]


def test_sequences_become_views_in_line_order(spark, import_cfg, tmp_path):
    path = _write(tmp_path, "Beauty.txt", SEQ_LINES)
    summary = load_history.run(spark, import_cfg, "sequences", path, SEQ_R, demo=True)

    base = adapters.SEQUENCE_BASE_TIME
    expected = [
        _event("sequences", path, SEQ_R, line, base + dt.timedelta(seconds=pos), "view", "view", user, item,
               occurrence=occurrence, position=pos)
        for line, user, items, occurrence in [
            (SEQ_LINES[0], "1", ["11", "12", "13"], 1), (SEQ_LINES[0], "1", ["11", "12", "13"], 2), (SEQ_LINES[1], "2", ["60"], 1),
        ]
        for pos, item in enumerate(items)
    ]
    events = _silver_events(spark, import_cfg, "sequences")
    assertDataFrameEqual(events, spark.createDataFrame(expected, S.SILVER_EVENTS))
    assertDataFrameEqual(
        _quarantine(spark, import_cfg, "sequences"),
        _expected_quarantine(spark, path, SEQ_R, "sequences", [("malformed_record", "3"), ("blank_line", "")]),
    )
    # Time order within a user is the file's order: that is all these timestamps mean.
    times = [r[S.ITEM_ID] for r in events.where(F.col(S.USER_ID) == _pseudonym("1")).orderBy(S.EVENT_TIME, S.EVENT_ID).collect()]
    assert times == ["11", "11", "12", "12", "13", "13"]
    assert (summary["raw_lines"], summary["records"], summary["accepted"], summary["quarantined"]) == (5, 9, 7, 2)
    assert summary["reconciled"] is True


DIGI_R = dt.date(2016, 6, 30)
DIGI_LINES = [
    "session_id;user_id;item_id;timeframe;eventdate",
    "1;NA;81766;526309;2016-05-09",
    "2;;31331;0;2016-05-10",
    "3;278;9654;75848;2016-05-09",
    "4;NA;1000;soon;2016-05-09",
    "5;NA;1000;1",
]


def test_diginetica_anonymous_sessions_and_header(spark, import_cfg, tmp_path):
    path = _write(tmp_path, "train-item-views.csv", DIGI_LINES)
    summary = load_history.run(spark, import_cfg, "diginetica", path, DIGI_R, demo=True)

    def view(line, day, ms, user, session, item):
        time = dt.datetime.fromisoformat(day).replace(tzinfo=UTC) + dt.timedelta(milliseconds=ms)
        return _event("diginetica", path, DIGI_R, line, time, "view", "view", user, item, session_key=session)

    expected = [
        view(DIGI_LINES[1], "2016-05-09", 526309, None, "1", "81766"),
        view(DIGI_LINES[2], "2016-05-10", 0, None, "2", "31331"),
        view(DIGI_LINES[3], "2016-05-09", 75848, "278", "3", "9654"),
    ]
    assertDataFrameEqual(_silver_events(spark, import_cfg, "diginetica"), spark.createDataFrame(expected, S.SILVER_EVENTS))
    assertDataFrameEqual(
        _quarantine(spark, import_cfg, "diginetica"),
        _expected_quarantine(spark, path, DIGI_R, "diginetica", [
            ("malformed_event_time", DIGI_LINES[4]), ("malformed_record", DIGI_LINES[5]),
        ]),
    )
    _assert_reconciled(summary, raw_lines=6, header_lines=1, records=5)


# --- the load as a whole ------------------------------------------------------------------------------


def test_every_format_kind_maps_to_a_canonical_type():
    for adapter in adapters.ADAPTERS.values():
        for kind, landing_kind in adapter.kinds.items():
            assert rules.EVENT_TYPE_MAP.get(landing_kind) in rules.CANONICAL_EVENT_TYPES, (adapter.name, kind)


def test_import_and_nightly_runs_of_one_date_leave_each_other_alone(spark, import_cfg, tmp_path):
    day = dt.date(2024, 1, 2)
    landing = Path(import_cfg.paths.landing) / "events" / day.isoformat()
    landing.mkdir(parents=True)
    event = json.dumps({"event_id": "a", "event_time": "2024-01-02T10:00:00Z", "event_type": "view", "user_id": "u1", "item_id": "i1"})
    bad = json.dumps({"event_id": "b", "event_time": "2024-01-02T10:00:00Z", "event_type": "teleport", "user_id": "u1", "item_id": "i1"})
    (landing / "part-00000.jsonl").write_text("\n".join([event, event, bad]) + "\n")
    ingest_landing.run(spark, import_cfg, day)
    build_silver_events.run(spark, import_cfg, day, demo=True)
    path = _write(tmp_path, "UserBehavior.csv", TAOBAO_LINES, final_newline=False)
    load_history.run(spark, import_cfg, "taobao", path, day, demo=True)
    first = {spec.name: _table(spark, import_cfg, spec) for spec in
             (catalog.SILVER_EVENTS, catalog.QUARANTINE, catalog.DUPLICATES, catalog.QUALITY_RESULTS)}
    first = {name: df.collect() for name, df in first.items()}

    # The nightly job re-runs the date, then the import re-runs: neither erases the other's rows.
    build_silver_events.run(spark, import_cfg, day, demo=True)
    summary = load_history.run(spark, import_cfg, "taobao", path, day, demo=True)
    for spec in (catalog.SILVER_EVENTS, catalog.QUARANTINE, catalog.DUPLICATES):
        assertDataFrameEqual(_table(spark, import_cfg, spec), first[spec.name])
    events = _table(spark, import_cfg, catalog.SILVER_EVENTS)
    assert _counts(events, S.DATASET) == {"landing": 1, "taobao": 4}
    assert _counts(_table(spark, import_cfg, catalog.QUARANTINE), S.STAGE) == {"silver": 1, "import:taobao": 4}
    assert _counts(_table(spark, import_cfg, catalog.DUPLICATES), S.DATASET) == {"landing": 1}
    results = _table(spark, import_cfg, catalog.QUALITY_RESULTS).where(F.col(S.RUN_DATE) == day)
    assert set(_counts(results, S.TABLE_NAME)) == {"bronze.events", "silver.events", "silver.events[taobao]"}
    assert summary["reconciled"] and summary["accepted"] == 4


def _counts(df, column):
    return {r[column]: r["count"] for r in df.groupBy(column).count().collect()}


def test_a_file_of_the_wrong_format_fails_and_commits_nothing(spark, fresh_cfg, tmp_path):
    path = _write(tmp_path, "u.data", ML_LINES)
    with pytest.raises(load_history.TooManyMalformedRecords, match=r"4 of 4 taobao records .*malformed_record"):
        load_history.run(spark, fresh_cfg, "taobao", path, ML_R, demo=True)
    assert not catalog.table_exists(spark, catalog.SILVER_EVENTS.location(fresh_cfg))
    assert not catalog.table_exists(spark, catalog.QUARANTINE.location(fresh_cfg))


# --- the real files (bounded: the full loads are measured by `python -m shoplens.bench ingest --input`) ---


def _head(source: Path, target: Path, n: int) -> list[str]:
    """Copies the first ``n`` lines of ``source`` to ``target``; returns them."""
    with source.open(encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in itertools.islice(f, n)]
    target.parent.mkdir(exist_ok=True)
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


@needs_public_data
def test_real_taobao_prefix_and_its_truncated_last_line(spark, fresh_cfg, tmp_path):
    source = PUBLIC_DATA / "taobao_userbehavior" / "UserBehavior_prefix.csv"
    path = tmp_path / "input" / "UserBehavior.csv"
    lines = _head(source, path, 3000)
    with source.open("rb") as f:
        f.seek(-200, 2)
        last = f.read().decode().split("\n")[-1]
    assert last.count(",") == 3  # the real file's truncated last line
    with path.open("a") as f:
        f.write(last)
    summary = load_history.run(spark, fresh_cfg, "taobao", path, TAOBAO_R, demo=True)
    assert summary["quarantined_by_reason"] == {"malformed_record": 1}
    assert _quarantine(spark, fresh_cfg, "taobao").first()[S.RAW_LINE] == last
    kinds = collections.Counter(line.split(",")[3] for line in lines)
    got = _counts(_silver_events(spark, fresh_cfg, "taobao"), S.SOURCE_EVENT_TYPE)
    assert got == dict(kinds)
    _assert_reconciled(summary, raw_lines=3001, header_lines=0, records=3001)


@needs_public_data
def test_real_online_retail_prefix(spark, fresh_cfg, tmp_path):
    import pyarrow.parquet as pq

    prefix = pq.read_table(PUBLIC_DATA / "online_retail" / "online_retail.parquet").slice(0, 5000)
    path = tmp_path / "online_retail.parquet"
    pq.write_table(prefix, path)
    rows = prefix.to_pylist()
    summary = load_history.run(spark, fresh_cfg, "online_retail", path, RETAIL_R, demo=True)

    def is_return(r):
        return r["InvoiceNo"].startswith("C")

    purchases = [r for r in rows if not is_return(r) and r["Quantity"] > 0]
    returns = [r for r in rows if is_return(r) and r["Quantity"] < 0]
    assert returns and len(purchases) + len(returns) < len(rows)  # the prefix has each case
    bad_quantity = len(rows) - len(purchases) - len(returns)
    assert summary["quarantined_by_reason"] == {"invalid_quantity": bad_quantity}
    events = _silver_events(spark, fresh_cfg, "online_retail")
    assert _counts(events, S.EVENT_TYPE) == {"purchase": len(purchases), "return": len(returns)}
    guests = sum(1 for r in purchases + returns if r["CustomerID"] is None)
    assert guests > 0
    assert events.where(F.col(S.USER_ID).isNull() & (F.col(S.SESSION_KEY) == F.col(S.ORDER_ID))).count() == guests
    assert events.where(F.col(S.QUANTITY) <= 0).count() == 0
    _assert_reconciled(summary, raw_lines=5000, header_lines=0, records=5000)


@needs_public_data
def test_real_movielens_prefix(spark, fresh_cfg, tmp_path):
    path = tmp_path / "input" / "u.data"
    lines = _head(PUBLIC_DATA / "movielens_100k" / "u.data", path, 3000)
    summary = load_history.run(spark, fresh_cfg, "movielens", path, ML_R, demo=True)
    reviews = _table(spark, fresh_cfg, catalog.SILVER_REVIEWS)
    assert _counts(reviews, S.RATING) == dict(collections.Counter(int(line.split("\t")[2]) for line in lines))
    assert summary["quarantined_by_reason"] == {}
    _assert_reconciled(summary, raw_lines=3000, header_lines=0, records=3000)


@needs_public_data
def test_real_beauty_sequences_prefix(spark, fresh_cfg, tmp_path):
    path = tmp_path / "input" / "Beauty.txt"
    lines = _head(PUBLIC_DATA / "amazon_beauty_seq" / "Beauty.txt", path, 1000)
    summary = load_history.run(spark, fresh_cfg, "sequences", path, SEQ_R, demo=True)
    actions = sum(len(line.split()) - 1 for line in lines)
    assert (summary["raw_lines"], summary["records"], summary["accepted"]) == (1000, actions, actions)
    assert summary["quarantined_by_reason"] == {}
    assert summary["reconciled"] is True
    users = _silver_events(spark, fresh_cfg, "sequences").select(S.USER_ID).distinct().count()
    assert users == 1000


@needs_public_data
def test_real_diginetica_sample_whole_file(spark, fresh_cfg, tmp_path):
    path = PUBLIC_DATA / "diginetica_sample" / "sample_train-item-views.csv"
    summary = load_history.run(spark, fresh_cfg, "diginetica", path, DIGI_R, demo=True)
    views = path.read_text().splitlines()[1:]
    # 12,391 views: the data README's 12,390 is `wc -l`, which misses the last line (no newline at the end).
    assert len(views) == 12_391
    assert (summary["header_lines"], summary["accepted"], summary["quarantined"]) == (1, 12_391, 0)
    _assert_reconciled(summary, raw_lines=12_392, header_lines=1, records=12_391)
    anonymous = sum(1 for line in views if line.split(";")[1] in ("NA", ""))
    events = _silver_events(spark, fresh_cfg, "diginetica")
    assert events.where(F.col(S.USER_ID).isNull() & F.col(S.SESSION_KEY).isNotNull()).count() == anonymous
