"""spark-submit entry point for ``shoplens.jobs.check_horovod`` (see that module)."""

import sys

from shoplens.jobs.check_horovod import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
