"""``python -m robustft`` (and ``torchrun … -m robustft train …``) runs the command line."""

import sys

from robustft.cli import main

if __name__ == "__main__":
    sys.exit(main())
