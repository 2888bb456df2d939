"""spark-submit entry point for ``shoplens.jobs.build_sessions`` (see that module)."""

import sys

from shoplens.jobs.build_sessions import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
