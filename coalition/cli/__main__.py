"""``python -m coalition.cli``: the same command as the ``coalition`` script."""

import sys

from coalition.cli.main import main

sys.exit(main())
