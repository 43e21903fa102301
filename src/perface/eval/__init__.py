"""``python -m perface.eval SUBCOMMAND``: evaluations reported the same way every time.

Each subcommand is a module of this package with ``add_arguments(parser)`` and
``run(args) -> int``, listed in :data:`perface.eval.__main__.SUBCOMMANDS`.
"""
