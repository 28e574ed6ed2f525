"""``python -m vramplan.server serve|tokens …``: the server commands without the main CLI."""

from .commands import server_cli

if __name__ == "__main__":
    server_cli(prog_name="python -m vramplan.server")
