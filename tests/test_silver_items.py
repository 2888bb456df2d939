"""build_silver_items: catalogue lines MERGEd on item_id, newest landing wins, bad lines quarantined."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shoplens import catalog
from shoplens import schemas as S
from shoplens.jobs import build_silver_items

D1, D2, D3 = dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 3)


def _item(item_id, price, **fields):
    return json.dumps({"item_id": item_id, "category_id": "c1", "brand": "B", "price": price, "title": f"T {item_id}",
                       "listed_date": "2023-05-01", **fields})


def _land(cfg, day, lines, part="part-00000.jsonl"):
    folder = Path(cfg.paths.landing) / "items" / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / part).write_text("\n".join(lines) + "\n")


def test_items_merge_keeps_the_newest_landing_and_quarantines_bad_lines(spark, fresh_cfg):
    _land(fresh_cfg, D1, [_item("i1", 10.5), _item("i2", "7"), '{"item_id": "i3",', _item("i4", -1), _item(" ", 3)])
    _land(fresh_cfg, D1, [_item("i1", 99)], part="part-00001.jsonl")  # i1 listed twice in one landing
    _land(fresh_cfg, D3, [_item("i1", 12.0, title="T i1 v2"), _item("i5", "abc")])

    assert build_silver_items.run(spark, fresh_cfg, D1) == {"lines": 6, "merged": 2, "quarantined": 4}
    assert build_silver_items.run(spark, fresh_cfg, D2) == {"lines": 0, "merged": 0, "quarantined": 0}
    build_silver_items.run(spark, fresh_cfg, D3)
    build_silver_items.run(spark, fresh_cfg, D1)  # a late re-run of an older date changes nothing

    items = spark.read.format("delta").load(catalog.SILVER_ITEMS.location(fresh_cfg)).drop(S.SOURCE_FILE)
    expected = spark.createDataFrame(
        [
            ("i1", "c1", "B", "T i1 v2", Decimal("12.00"), dt.date(2023, 5, 1), D3),
            ("i2", "c1", "B", "T i2", Decimal("7.00"), dt.date(2023, 5, 1), D1),
        ],
        "item_id string, category_id string, brand string, title string, price decimal(18,2), listed_date date, updated_on date",
    )
    assertDataFrameEqual(items, expected)
    quarantine = spark.read.format("delta").load(catalog.QUARANTINE.location(fresh_cfg)).where(F.col(S.STAGE) == "items")
    assert sorted((r[S.RUN_DATE], r[S.REASON]) for r in quarantine.collect()) == [
        (D1, "duplicate_item"), (D1, "malformed_json"), (D1, "missing_item_id"), (D1, "negative_price"),
        (D3, "malformed_price"),
    ]
