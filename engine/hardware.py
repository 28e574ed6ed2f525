"""Hardware classes: which group of GPUs a GPU belongs to, and which runtime constant applies to it.

Runtime efficiencies differ between NVIDIA data-center cards, GeForce boards, AMD, Intel and Apple
silicon. The classes and the rules that sort GPUs into them are catalog data
(``catalogs/hardware_classes``); the constants that differ per class are declared in
``catalogs/runtime_constants`` (``per_hardware_class``) and specialised in a runtime profile with
the suffix ``_<class>``. This module holds the two small pieces of logic over that data:

- :func:`classify`: a GPU's class is the one its entry names in ``hardware_class``, else the class
  whose matching rule names the most fields (a tie between two classes is an error the loader
  reports); a GPU no rule matches has no class, and estimates say so in ``warnings``.
- :func:`runtime_constant`: ``<name>_<class>``, then the class's ``fallback`` chain, then the plain
  ``<name>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def _rule_matches(rule: Mapping[str, Any], gpu: Mapping[str, Any]) -> bool:
    for fld, want in rule.items():
        allowed = want if isinstance(want, list) else [want]
        if gpu.get(fld) not in allowed:
            return False
    return True


def match_strength(cls: Mapping[str, Any], gpu: Mapping[str, Any]) -> int:
    """How many fields the class's most specific matching rule names; 0 when no rule matches."""
    return max((len(rule) for rule in cls.get("match", ()) if _rule_matches(rule, gpu)), default=0)


def classify(classes: Iterable[tuple[str, Mapping[str, Any]]], gpu: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """``(class key or None, classes tied with it)`` for one GPU entry's data.

    ``classes`` is ``(key, data)`` pairs. The GPU's own ``hardware_class`` wins (the caller checks it
    names a class); otherwise the strongest match, and the second list names every class tied with
    it (empty when the choice is clear)."""
    explicit = gpu.get("hardware_class")
    if explicit:
        return explicit, []
    scored = [(match_strength(data, gpu), key) for key, data in classes]
    best = max((s for s, _ in scored), default=0)
    if best == 0:
        return None, []
    winners = [key for s, key in scored if s == best]
    return winners[0], winners[1:]


def lookup_order(classes: Mapping[str, Mapping[str, Any]], key: str | None) -> tuple[str, ...]:
    """The class and its fallbacks, most specific first (the loader has checked there is no loop)."""
    order: list[str] = []
    while key is not None and key not in order:
        order.append(key)
        key = (classes.get(key) or {}).get("fallback")
    return tuple(order)


def find_runtime_constant(constants: Mapping[str, Mapping[str, Any]], name: str,
                          order: Iterable[str]) -> tuple[str, float] | None:
    """``(constant key used, value)`` of a per-class constant for a GPU whose class order is ``order``,
    or None when the profile has neither a specialised nor a plain value."""
    for key in [f"{name}_{cls}" for cls in order] + [name]:
        if key in constants:
            return key, float(constants[key]["value"])
    return None


def class_variant(name: str, per_class: Iterable[str], classes: Iterable[str]) -> tuple[str, str] | None:
    """``(constant, class)`` where ``name`` is ``<constant>_<class>`` for one of the ``per_class`` constants and a
    registered class (``decode_bw_eff_amd`` -> ``("decode_bw_eff", "amd")``), else None."""
    known = set(classes)
    for base in per_class:
        if name.startswith(base + "_") and name[len(base) + 1:] in known:
            return base, name[len(base) + 1:]
    return None


def runtime_constant(constants: Mapping[str, Mapping[str, Any]], name: str, order: Iterable[str]) -> tuple[str, float]:
    """As :func:`find_runtime_constant`, for a constant every profile has: the loader guarantees the
    plain ``name`` of a declared constant without a default or fallback (and fills in defaults)."""
    found = find_runtime_constant(constants, name, order)
    if found is None:
        raise KeyError(f"runtime constant {name!r}")
    return found
