"""Which evaluated formulas produced an estimate's numbers (so a report shows those, and only those).

The formula graph is shared by both workloads and every runtime, so an estimate evaluates formulas
whose values end up unused: an inference request computes ``trainable_params`` because
``transient_bytes`` is ``training_transient_bytes if is_training else …``, and adds a
``lora_adapter_bytes`` of 0. :func:`live_steps` walks back from the formulas the response reads
and keeps a step only if its value *contributed*, reading each expression with the values the
trace recorded:

- ``a if c else b``: ``c`` and the branch taken; ``x and y`` / ``x or y``: what Python evaluated;
- ``a + b`` / ``a - b``: an operand that is exactly 0 adds nothing (dropped);
- ``a * b``: if one factor is exactly 0, the product is that 0, whatever the other (dropped); a factor
  of exactly 1 changes nothing (dropped), nor does a divisor of exactly 1;
- every other operation (division, comparisons, ``min``/``max`` and the other functions): all operands.

The expressions are the checked trees of :mod:`vramplan.formulaset`, evaluated by its compiled closures.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from typing import Any

from .compiled import compile_tree
from .formulaset import FUNCTIONS, FormulaSet


def contributing_names(tree: ast.AST, values: Mapping[str, Any]) -> set[str]:
    """Names in ``tree`` whose values decided its result, given ``values``."""
    used: set[str] = set()

    def value(node: ast.AST) -> Any:
        return compile_tree(node, FUNCTIONS)(values)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Name):
            if node.id not in FUNCTIONS:
                used.add(node.id)
        elif isinstance(node, ast.IfExp):
            visit(node.test)
            visit(node.body if value(node.test) else node.orelse)
        elif isinstance(node, ast.BoolOp):
            for operand in node.values:  # Python stops at the first falsy (and) / truthy (or) operand
                visit(operand)
                v = value(operand)
                if (isinstance(node.op, ast.And) and not v) or (isinstance(node.op, ast.Or) and v):
                    break
        elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
            for operand in (node.left, node.right):
                if value(operand) != 0:
                    visit(operand)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            left, right = value(node.left), value(node.right)
            if left == 0 or right == 0:
                visit(node.left if left == 0 else node.right)  # the zero decided it
            elif left == 1 or right == 1:
                visit(node.right if left == 1 else node.left)  # a factor of 1 changes nothing
            else:
                visit(node.left)
                visit(node.right)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and value(node.right) == 1:
            visit(node.left)
        else:
            for child in ast.iter_child_nodes(node):
                visit(child)

    visit(tree)
    return used


def live_steps(formulas: FormulaSet, trace: list[dict[str, Any]], outputs: Iterable[str]) -> list[dict[str, Any]]:
    """The trace steps that contributed to ``outputs`` (formula ids), in evaluation order."""
    steps = {step["id"]: step for step in trace}
    live: set[str] = set()
    stack = [o for o in outputs if o in steps]
    while stack:
        fid = stack.pop()
        if fid in live:
            continue
        live.add(fid)
        step, formula = steps[fid], formulas.formulas.get(fid)
        names = contributing_names(formula.tree, step["inputs"]) if formula is not None else set(step["inputs"])
        stack.extend(n for n in names if n in steps and n not in live)
    return [step for step in trace if step["id"] in live]
