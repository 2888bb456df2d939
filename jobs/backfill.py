"""spark-submit entry point for ``shoplens.backfill`` (see that module)."""

import sys

from shoplens.backfill import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
