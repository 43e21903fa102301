"""Subcommands of the ``perface`` command line (see ``perface.cli``)."""
