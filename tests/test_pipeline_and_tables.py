"""`make run`'s command end to end, and the table listing it prints."""

from __future__ import annotations

import json
import subprocess
import sys

from shoplens.jobs import ingest_landing
from shoplens.pipeline import STEPS
from shoplens.tables import describe_tables

from .conftest import CONF_DIR, SMALL_SHOP_OVERRIDES


def test_describe_tables_lists_location_version_and_rows(spark, fresh_cfg, fixture_landing):
    import datetime as dt

    ingest_landing.run(spark, fresh_cfg, dt.date(2024, 1, 1))
    ingest_landing.run(spark, fresh_cfg, dt.date(2024, 1, 1))
    described = describe_tables(spark, fresh_cfg)
    assert set(described) == {"bronze.events", "silver.quarantine", "ops.quality_results"}  # no silver run yet
    assert described["bronze.events"] == {
        "location": f"{fresh_cfg.paths.warehouse}/bronze/events",
        "version": 1,
        "rows": 24,
    }
    assert described["silver.quarantine"]["rows"] == 0


def test_demo_pipeline_generates_the_shop_runs_every_date_and_ends_with_a_json_summary(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "shoplens.pipeline", "--env", "local", "--demo", "--conf-dir", str(CONF_DIR),
         "--demo-days", "4", "--demo-events", "3000",
         "--set", f"paths.warehouse={tmp_path / 'wh'}", "--set", f"paths.landing={tmp_path / 'landing'}",
         *[arg for item in SMALL_SHOP_OVERRIDES for arg in ("--set", item)]],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PUBLISHED DEMO KEY" in result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    truth = json.loads((tmp_path / "landing" / "_truth" / "manifest.json").read_text())["totals"]
    assert summary["bronze.events"]["rows"] == truth["lines"] - truth["malformed_json"]
    assert summary["silver.events"]["rows"] == truth["clean_events"] + truth["late_within_window"]
    assert summary["silver.duplicates"]["rows"] == truth["duplicate"]
    items = json.loads((tmp_path / "landing" / "_truth" / "manifest.json").read_text())["items"]
    assert summary["silver.items"]["rows"] == items["rows_per_date"]["2024-01-01"]
    assert summary["bronze.events"]["location"] == str(tmp_path / "wh" / "bronze" / "events")
    gold = ("gold.sessions", "gold.session_events", "gold.item_vocab", "gold.sequence_examples")
    profiles = ("gold.user_daily_activity", "gold.user_profiles", "gold.segment_summary")
    for table in gold + profiles:
        assert summary[table]["rows"] > 0, table
    # Four days are no labelled churn history: the churn tables exist, empty; every user is valued.
    assert summary["gold.churn_scores"]["rows"] == 0
    assert summary["gold.customer_value"]["rows"] > 0
    assert summary["gold.session_events"]["rows"] == summary["silver.events"]["rows"]
    # The demo trains the next-item model on its last date and scores every user with it.
    assert summary["gold.next_item_predictions"]["rows"] > 0
    assert summary["gold.model_metrics"]["rows"] > 0
    # The last date is complete (next-item predictions included), so it is published.
    assert summary["gold.published_runs"]["rows"] == 1
    # Every job ran through its main, so gold.pipeline_runs holds one succeeded run of each: the
    # bulk-loaded history (days 1 to 3, one run per job that loads it), then the last night, every job.
    history = ["ingest_landing", "build_silver_events", "build_silver_items", "build_sessions", "build_sequences",
               "build_user_activity", "build_user_profiles"]
    assert summary["gold.pipeline_runs"]["rows"] == len(history) + len(STEPS)
    progress = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert len(progress) == summary["gold.pipeline_runs"]["rows"]
    assert "] 2024-01-03 ingest_landing " in progress[0] and "] 2024-01-04 publish " in progress[-1]
    assert all(f" {job} " in line for line, job in zip(progress[-len(STEPS):], STEPS, strict=True))
