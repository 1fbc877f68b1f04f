"""``python -m train.sweep``."""
import sys

from .cli import main

sys.exit(main())
