"""`python -m training.grow`: growing a style model to a larger resolution.

The same command as `python -m training.gan.grow`; this module only keeps the short name.
"""
import sys

from training.gan.grow import main

if __name__ == "__main__":
    sys.exit(main())
