"""spark-submit entry point for ``shoplens.jobs.train_next_item`` (see that module)."""

import sys

from shoplens.jobs.train_next_item import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
