"""`python -m training.export_medigan`: a model folder as a medigan model package.

The same command as `python -m training.export_medigan`; this module only keeps the short name.
"""
import sys

from training.publish.export_medigan import main

if __name__ == "__main__":
    sys.exit(main())
