"""One small hierarchy of errors that every face (Python, CLI, HTTP) turns into one clear message.

``VramplanError`` is the one type a caller needs to catch. Each error carries ``problems``: a list
of ``(where, what)`` pairs — a request field path, or a data file and key path — so a message can
name every bad field at once.
"""

from __future__ import annotations

from collections.abc import Iterable


class VramplanError(Exception):
    """Base class: anything vramplan reports to a user instead of a traceback."""

    def __init__(self, problems: Iterable[tuple[str, str]] | str, *, suggestions: dict[str, list[str]] | None = None):
        if isinstance(problems, str):
            problems = [("", problems)]
        self.problems: list[tuple[str, str]] = [(str(w), str(m)) for w, m in problems]
        self.suggestions: dict[str, list[str]] = dict(suggestions or {})
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = []
        for where, what in self.problems:
            text = f"{where}: {what}" if where else what
            close = self.suggestions.get(where)
            if close:
                text += f" (closest: {', '.join(close)})"
            parts.append(text)
        return "; ".join(parts)

    def as_dict(self) -> dict:
        return {
            "error": type(self).__name__,
            "message": self.message,
            "errors": [
                {"field": w, "message": m, **({"closest": self.suggestions[w]} if w in self.suggestions else {})}
                for w, m in self.problems
            ],
        }


class RequestError(VramplanError):
    """A request that cannot be answered as given: wrong type, out of range, unknown key."""


class CatalogError(VramplanError):
    """A catalog or data file that does not validate, or two contributors claiming one key."""


class FormulaError(VramplanError):
    """A formula file that does not load, or a formula that cannot be evaluated."""

    #: The id of the formula whose evaluation failed (None for load errors).
    formula: str | None = None


class PluginError(VramplanError):
    """A built-in plugin that fails, or a hook implementation that breaks the contract."""
