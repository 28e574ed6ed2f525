"""A fast evaluator for checked formula trees.

:func:`vramplan.formulaset.parse_expression` accepts only a small grammar (numbers, declared names,
arithmetic, comparisons, ``and``/``or``/``not``, ``a if c else b`` and whitelisted calls) and
rejects everything else at load. This module turns such a checked tree into nested closures once,
so an estimate evaluates ~100 formulas in tens of microseconds instead of re-walking each tree
through simpleeval's generic dispatcher. This is the evaluator that runs by default.

The closures apply the operators and functions of :mod:`vramplan.semantics`, the same objects
simpleeval is given, so both evaluators give the same values and the same refusals;
``tests/test_evaluators.py`` checks it on random expressions and on whole requests at the request
schema's extremes. Set ``VRAMPLAN_EVALUATOR=simpleeval`` to evaluate with simpleeval itself.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from typing import Any

from .semantics import BINARY as _BIN
from .semantics import COMPARE as _CMP
from .semantics import UNARY as _UNARY

Fn = Callable[[Mapping[str, Any]], Any]


def _leaf(node: ast.AST):
    """('name', id) or ('const', value) for leaves the parent can read inline, else None."""
    if isinstance(node, ast.Name):
        return ("name", node.id)
    if isinstance(node, ast.Constant):
        return ("const", node.value)
    return None


def compile_tree(node: ast.AST, functions: Mapping[str, Callable]) -> Fn:
    """Closures for a tree that parse_expression has already checked."""
    if isinstance(node, ast.Expression):
        return compile_tree(node.body, functions)
    if isinstance(node, ast.Constant):
        value = node.value
        return lambda v: value
    if isinstance(node, ast.Name):
        name = node.id
        return lambda v: v[name]
    if isinstance(node, ast.BinOp):
        # Most operands are a name or a number: reading them inline saves a call per leaf, the main cost.
        op, lleaf, rleaf = _BIN[type(node.op)], _leaf(node.left), _leaf(node.right)
        if lleaf and rleaf:
            (lk, lx), (rk, rx) = lleaf, rleaf
            if lk == "name" and rk == "name":
                return lambda v: op(v[lx], v[rx])
            if lk == "name":
                return lambda v: op(v[lx], rx)
            if rk == "name":
                return lambda v: op(lx, v[rx])
        left, right = compile_tree(node.left, functions), compile_tree(node.right, functions)
        if rleaf and rleaf[0] == "name":
            rn = rleaf[1]
            return lambda v: op(left(v), v[rn])
        if rleaf:
            rc = rleaf[1]
            return lambda v: op(left(v), rc)
        if lleaf and lleaf[0] == "name":
            ln = lleaf[1]
            return lambda v: op(v[ln], right(v))
        return lambda v: op(left(v), right(v))
    if isinstance(node, ast.UnaryOp):
        operand = compile_tree(node.operand, functions)
        if isinstance(node.op, ast.USub):
            return lambda v: -operand(v)
        if isinstance(node.op, ast.Not):
            return lambda v: not operand(v)
        unary = _UNARY[type(node.op)]  # unary plus: +True is 1, as simpleeval computes it
        return lambda v: unary(operand(v))
    if isinstance(node, ast.Compare):
        if len(node.ops) == 1 and _leaf(node.left) and _leaf(node.comparators[0]):
            cmp, (lk, lx), (rk, rx) = _CMP[type(node.ops[0])], _leaf(node.left), _leaf(node.comparators[0])
            if lk == "name" and rk == "const":
                return lambda v: cmp(v[lx], rx)
            if lk == "name" and rk == "name":
                return lambda v: cmp(v[lx], v[rx])
        first = compile_tree(node.left, functions)
        pairs = [(_CMP[type(o)], compile_tree(c, functions)) for o, c in zip(node.ops, node.comparators)]

        def compare(v):
            left = first(v)
            for op, right_fn in pairs:
                right = right_fn(v)
                if not op(left, right):
                    return False
                left = right
            return True

        return compare
    if isinstance(node, ast.BoolOp):
        parts = [compile_tree(x, functions) for x in node.values]
        if isinstance(node.op, ast.And):
            def all_of(v):
                value = True
                for p in parts:
                    value = p(v)
                    if not value:
                        return value
                return value
            return all_of

        def any_of(v):
            value = False
            for p in parts:
                value = p(v)
                if value:
                    return value
            return value
        return any_of
    if isinstance(node, ast.IfExp):
        test, body, orelse = (compile_tree(node.test, functions), compile_tree(node.body, functions),
                              compile_tree(node.orelse, functions))
        bleaf, oleaf = _leaf(node.body), _leaf(node.orelse)
        if oleaf and oleaf[0] == "const":
            oc = oleaf[1]
            return lambda v: body(v) if test(v) else oc
        if bleaf and bleaf[0] == "const":
            bc = bleaf[1]
            return lambda v: bc if test(v) else orelse(v)
        return lambda v: body(v) if test(v) else orelse(v)
    if isinstance(node, ast.Call):
        fn = functions[node.func.id]
        args = [compile_tree(a, functions) for a in node.args]
        if len(args) == 1:
            a0 = args[0]
            return lambda v: fn(a0(v))
        if len(args) == 2:
            leaves = [_leaf(a) for a in node.args]
            if leaves[1] and leaves[1][0] == "const":
                a0, c1 = args[0], leaves[1][1]
                return lambda v: fn(a0(v), c1)
            a0, a1 = args
            return lambda v: fn(a0(v), a1(v))
        return lambda v: fn(*[a(v) for a in args])
    raise TypeError(f"{type(node).__name__} is not part of the formula grammar")  # parse_expression rejects these
