"""`python -m study.benchmark`, the name earlier notes and checks use for `python -m study.measure.benchmark`."""

import sys

from study.measure.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
