"""The ``cmcgns`` subcommands, one module per group; ``cmcgns_cli.cli`` registers them."""
