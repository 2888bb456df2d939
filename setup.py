"""ShopLens: PySpark batch jobs for e-commerce behaviour analytics.

The import package ``shoplens`` lives under ``lib/``; the thin spark-submit entry points live under
``jobs/`` and call ``shoplens.jobs.<name>.main``. Runtime pins are in ``requirements/spark.txt``
(and the full lock in ``requirements/spark.lock``): this file only declares what the code imports.
"""

from setuptools import find_packages, setup

JOBS = [
    "ingest_landing", "build_silver_events", "build_silver_items", "build_sessions", "build_sequences",
    "build_user_activity", "build_user_profiles", "build_churn_scores", "build_customer_value", "build_recommendations",
    "load_history", "train_next_item", "score_next_item", "publish",
    "check_horovod",
]

setup(
    name="shoplens",
    version="0.1.0",
    description="Nightly Spark batch suite for e-commerce behaviour analytics",
    python_requires=">=3.10,<3.12",
    package_dir={"": "lib"},
    packages=find_packages("lib"),
    package_data={"shoplens": ["demo/fixture_landing/*/*/*"]},
    install_requires=[
        "pyspark>=4.0,<4.1",
        "delta-spark>=4.0,<4.1",
        "pyarrow>=15,<20",
        "tensorflow-cpu>=2.15,<2.16",
        "horovod==0.28.1",
        "great-expectations>=1.24,<2",
        "numpy<2",
        "pandas<2.3",
        "pyyaml>=6",
        "scipy>=1.11",
    ],
    entry_points={
        "console_scripts": [f"shoplens-{job.replace('_', '-')}=shoplens.jobs.{job}:main" for job in JOBS]
        + ["shoplens-tables=shoplens.tables:main", "shoplens-backfill=shoplens.backfill:main"],
    },
)
