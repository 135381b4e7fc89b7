"""One module per ``seg25d`` subcommand; each exposes ``register(subparsers)``.

A command module only parses arguments and calls a typed library function elsewhere in
``seg25d.pipeline``; it never holds the work itself.
"""


def device_overrides(args) -> list[str]:
    """``--set``-style overrides of ``train.device`` (and ``train.precision``) for the commands that train."""
    sets = [f"train.device={args.device!r}"] if args.device else []
    return sets + ([f"train.precision={args.precision!r}"] if getattr(args, "precision", None) else [])


def add_device_arguments(parser, precision_default: str | None = None) -> None:
    """``--device`` for a command that runs a network, and ``--precision`` when ``precision_default`` names its
    default (commands that train take precision from ``train.precision``)."""
    parser.add_argument("--device", metavar="auto|cpu|cuda|cuda:N",
                        help="where the network runs, as train.device (default auto: the GPU when CUDA is "
                             "available, else the CPU)")
    if precision_default:
        parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                            help=f"of the forward pass (default: {precision_default})")
