"""spark-submit entry point for ``shoplens.jobs.score_next_item`` (see that module)."""

import sys

from shoplens.jobs.score_next_item import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
