"""`python -m training.audit`: the membership-inference audit of a model folder (privacy.json).

The same command as `python -m training.evaluation.audit`; this module only keeps the short name.
"""
import sys

from training.evaluation.audit import main

if __name__ == "__main__":
    sys.exit(main())
