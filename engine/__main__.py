"""``python -m vramplan`` is the ``vramplan`` command."""

from .cli import main

main(prog_name="vramplan")
