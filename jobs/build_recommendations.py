"""spark-submit entry point for ``shoplens.jobs.build_recommendations`` (see that module)."""

import sys

from shoplens.jobs.build_recommendations import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
