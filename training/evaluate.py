"""`python -m training.evaluate`: evaluating a generator against real slices.

The same command as `python -m training.evaluation.evaluate`; this module only keeps the short name.
"""
import sys

from training.evaluation.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
