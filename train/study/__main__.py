"""python -m train.study imbalance|transfer|init ...  (see --help)"""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
