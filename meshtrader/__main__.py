"""`python -m meshtrader` is the `mesh` command."""
import sys

from meshtrader.ops.cli import main

sys.exit(main())
