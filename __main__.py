"""``python -m seg25d`` runs the command-line interface."""

from seg25d.pipeline.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
