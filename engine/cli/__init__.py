"""The ``vramplan`` command: one click group, its commands grouped by what they do.

``vramplan inference`` / ``vramplan finetuning`` (:mod:`vramplan.cli.estimate`) take a request file
(``--request FILE``, ``-`` for stdin) and/or friendly flags (flags override the file), and print a
table (default), exactly the HTTP response body (``--format json``) or a report. ``plan``
(:mod:`.plan`), ``sweep`` (:mod:`.sweep`), ``formulas`` (:mod:`.formulas`), the catalog listings
(:mod:`.models`) and the server's ``serve`` / ``tokens`` (:mod:`vramplan.server.commands`) are
imported when they run. The flags and request reading they share are :mod:`.common`. Every error is
one line on stderr and exit status 2.
"""

from __future__ import annotations

import importlib
import sys

import click

from ..errors import VramplanError
from ..version import __version__
from .estimate import finetuning, inference

#: Commands that live in their own modules, imported when they run: the HTTP server's imports alone
#: take longer than answering ``vramplan inference``.
LAZY_COMMANDS = {
    "models": "vramplan.cli.models:models", "gpus": "vramplan.cli.models:gpus", "runtimes": "vramplan.cli.models:runtimes",
    "plugins": "vramplan.cli.models:plugins",
    "serve": "vramplan.server.commands:serve", "tokens": "vramplan.server.commands:tokens",
    "plan": "vramplan.cli.plan:plan", "sweep": "vramplan.cli.sweep:sweep",
    "formulas": "vramplan.cli.formulas:formulas",
}


class _Group(click.Group):
    """Every user error — bad flags, bad request, unknown keys — is one line on stderr and exit 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS and name not in self.commands:
            module, _, attr = LAZY_COMMANDS[name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
        except VramplanError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vramplan")
def main() -> None:
    """Will this LLM workload fit on that GPU, and how fast will it run?

    Memory figures are GiB (2^30 bytes); a maker's "24 GB" card is 24 GiB.
    """




main.add_command(inference)
main.add_command(finetuning)
