"""The ``coalition`` command: one module per verb group, each a thin call into the use
cases of :mod:`coalition`. :mod:`coalition.cli.main` builds the parser."""
