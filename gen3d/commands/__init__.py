"""Subcommand modules; `gen3d.cli` imports each one, which registers its commands on the app."""
