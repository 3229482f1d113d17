"""The command lines' parser: argparse, but a mistake is one line and exit 2, like every other refusal.
Standard library only, so that analysis/ uses it without torch."""

from __future__ import annotations

import argparse


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        """argparse prints its usage block and the message; here the message alone, with where help is."""
        self.exit(2, f"error: {message} (`{self.prog} --help` lists the options)\n")
