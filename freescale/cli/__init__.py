"""The `freescale` command line: argument parsing and the commands, which call the layers below."""

from freescale.cli.commands import main

__all__ = ["main"]
