"""spark-submit entry point for ``shoplens.jobs.publish`` (see that module)."""

import sys

from shoplens.jobs.publish import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
