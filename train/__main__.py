"""python -m train --arch NAME --mode MODE --data SPEC ...  (see --help)"""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
