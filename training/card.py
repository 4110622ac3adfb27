"""`python -m training.card`: (re)writing model cards.

The same command as `python -m training.card`; this module only keeps the short name.
"""
import sys

from training.publish.card import main

if __name__ == "__main__":
    sys.exit(main())
