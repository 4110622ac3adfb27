"""`python -m training.push`: publishing a model folder to the Hugging Face Hub, or the app to a Space.

The same command as `python -m training.publish.push`; this module only keeps the short name.
"""
import sys

from training.publish.push import main

if __name__ == "__main__":
    sys.exit(main())
