"""One module per job: ``main(argv)`` for spark-submit and console scripts, ``run(spark, cfg, ...)``."""
