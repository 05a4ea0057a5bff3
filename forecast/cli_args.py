"""Argument types shared by the subcommands' parsers (a module of its own: the subcommand modules are
imported by ``forecast.cli``, so they cannot import it back at load time)."""

from __future__ import annotations

import argparse


def int_at_least(low: int, what: str):
    """An argparse ``type``: an integer of at least ``low``; ``what`` (the flag) names it in the error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{what} must be >= {low}, got {value}")
        return value
    return parse
