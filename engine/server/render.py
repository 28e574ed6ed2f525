"""One jinja2 Environment for the server's HTML (autoescaped, StrictUndefined), templates from the package."""

from __future__ import annotations

import re
from functools import lru_cache

import jinja2
from markupsafe import Markup, escape
from starlette.responses import HTMLResponse


def markdownish(text: str) -> Markup:
    """Escape, then render the two bits of Markdown the OpenAPI descriptions use: `code` and **bold**."""
    html = str(escape(text))
    html = re.sub(r"`([^`]+)`", r"<code>\1</code>", html)
    html = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", html)
    return Markup(html)


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("vramplan.server", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["markdownish"] = markdownish
    return env


def render(name: str, context: dict, *, status: int = 200, headers: dict | None = None) -> HTMLResponse:
    html = environment().get_template(name).render(**context)
    return HTMLResponse(html, status_code=status, headers=headers)
