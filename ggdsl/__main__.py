"""``python -m ggdsl``: the same as the ``ggdsl`` command."""

import sys

from ggdsl.cli import main

sys.exit(main())
