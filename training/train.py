"""`python -m training.train`: training a generator.

The same command as `python -m training.gan.cli`; this module only keeps the short name.
"""
import sys

from training.gan.cli import main

if __name__ == "__main__":
    sys.exit(main())
