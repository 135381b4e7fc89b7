"""One module per ``seg25d`` subcommand; each exposes ``register(subparsers)``.

A command module only parses arguments and calls a typed library function elsewhere in
``seg25d.pipeline``; it never holds the work itself.
"""
