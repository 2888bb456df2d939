"""spark-submit entry point for ``shoplens.jobs.load_history`` (see that module)."""

import sys

from shoplens.jobs.load_history import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
