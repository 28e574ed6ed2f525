"""A runtime profile's assumption lines name its constants as ``{name}``: each is filled with the value the
request sees (its GPU's tier, the model's context, ``runtime_settings``), so what a response says is what
the formulas used. A constant's ``accepts`` (the values the runtime itself takes) is said in words here too."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")


def _show(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def fill(text: str, value_of: Callable[[str], float | None]) -> str:
    """``text`` with each ``{name}`` replaced by ``value_of(name)``; a name it does not know stays as written."""
    def one(m: re.Match[str]) -> str:
        v = value_of(m.group(1))
        return m.group(0) if v is None else _show(v)
    return PLACEHOLDER.sub(one, text)


def unknown_names(lines: Iterable[str], known: Iterable[str]) -> list[str]:
    """The ``{name}`` placeholders in ``lines`` that name no constant in ``known``."""
    names = set(known)
    return sorted({m.group(1) for line in lines for m in PLACEHOLDER.finditer(line) if m.group(1) not in names})


def accepted_range(accepts: dict) -> str:
    """A constant's ``accepts`` in words: "above 0, at most 1"."""
    return ", ".join(f"{words} {accepts[key]:g}" for key, words in (("at_least", "at least"), ("above", "above"),
                                                                     ("at_most", "at most")) if key in accepts)


def outside_accepted(accepts: dict | None, value: float) -> bool:
    """Whether a value lies outside what the runtime accepts for a constant (its catalog ``accepts``)."""
    if not accepts:
        return False
    return (("at_least" in accepts and value < accepts["at_least"]) or ("above" in accepts and value <= accepts["above"])
            or ("at_most" in accepts and value > accepts["at_most"]))
