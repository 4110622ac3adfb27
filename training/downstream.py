"""`python -m training.downstream`: the downstream usefulness study.

The same command as `python -m training.evaluation.downstream`; this module only keeps the short name.
"""
import sys

from training.evaluation.downstream.cli import main

if __name__ == "__main__":
    sys.exit(main())
