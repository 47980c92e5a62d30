"""`python -m adaptive_decoder.cli`: the `adaptive-decoder` command without its console script."""

import sys

from . import main

sys.exit(main())
