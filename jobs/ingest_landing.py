"""spark-submit entry point for ``shoplens.jobs.ingest_landing`` (see that module)."""

import sys

from shoplens.jobs.ingest_landing import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
