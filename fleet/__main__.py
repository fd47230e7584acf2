"""`python -m fleet` is the `unified` command."""

import sys

from fleet.cli import main

sys.exit(main())
