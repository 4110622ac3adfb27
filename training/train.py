"""`python -m training.train`: training a generator (training/gan/); an alias of `python -m training.gan.cli`."""
import sys

from training.gan.cli import main

if __name__ == "__main__":
    sys.exit(main())
