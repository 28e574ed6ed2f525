"""Formulas as data: load, check and evaluate them safely with simpleeval.

A formula file (``formulas/**/*.yaml``, schema ``formula-file``) holds one memory component,
optimization or performance model as a list of formulas — ``id``, ``description``, ``inputs``,
``expr``, ``unit``, ``references``. Each expression is parsed once, at load, and checked against a
small grammar: arithmetic, comparisons, ``a if c else b``, and calls to the functions in
:data:`FUNCTIONS`. A name that is not a declared input, an input that names nothing known, any
attribute access, subscript, lambda or comprehension is a :class:`FormulaError` naming the file,
the formula and the symbol. Evaluation runs in dependency order and can record a trace of every
step: by default through closures compiled from each tree at load (:mod:`vramplan.compiled`);
with ``VRAMPLAN_EVALUATOR=simpleeval`` (unset or empty: the default) by simpleeval walking the same
tree. Both take their operators, functions and limits from :mod:`vramplan.semantics`, so they agree
on every value and every refusal.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import simpleeval

from . import semantics
from .compiled import compile_tree
from .errors import FormulaError
from .semantics import FUNCTIONS, MAX_VALUE

_ALLOWED_NODES = (
    ast.Expression, ast.Expr, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp,
    ast.Call, ast.Name, ast.Load, ast.Constant,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd, ast.Not,
    ast.And, ast.Or, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE,
)
MAX_DEPTH = 40
MAX_LITERAL = 1e18
MAX_EXPONENT = 4
#: How large an integer a formula may build, as a degree in its inputs (each input and literal
#: counting as one factor of up to ~1e18-1e21; see :func:`int_degree`). Floats overflow to an error
#: at once, but Python integers grow without limit: a tower of twelve ``**4`` builds a number of
#: 10^8 digits and hangs the evaluation. 256 factors of 1e21 are ~5,400 digits, microseconds of
#: work; the built-in formulas need at most 39.
MAX_INT_DEGREE = 256
#: The degree of an integer made from a float (``ceil``/``floor``): floats stop below 1.8e308 = (1e18)^17.1.
_FLOAT_AS_INT = 18


@dataclass(frozen=True)
class Formula:
    id: str
    description: str
    inputs: tuple[str, ...]
    expr: str
    unit: str
    references: tuple[str, ...]
    file: str
    group: str  # the id of the file that defines it
    tree: ast.AST = field(repr=False, compare=False)
    fn: Callable[[Mapping[str, float]], Any] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Component:
    """A memory component: its ``memory_details`` label and the formula giving its bytes."""

    id: str
    label: str
    output: str
    workloads: tuple[str, ...]
    order: int
    file: str


@dataclass(frozen=True)
class FormulaFile:
    id: str
    kind: str
    description: str
    file: str
    source: str  # plugin or path that supplied it
    formulas: tuple[Formula, ...]
    component: Component | None
    references: tuple[str, ...]
    cases: tuple[dict, ...]


def parse_expression(expr: str, *, where: str, declared: Iterable[str]) -> ast.AST:
    """Parse and check one expression; return the tree to evaluate."""
    declared = set(declared)
    try:
        tree = ast.parse(" ".join(expr.split()), mode="eval")
    except SyntaxError as exc:
        raise FormulaError([(where, f"syntax error in expression: {exc.msg}")]) from None
    problems: list[tuple[str, str]] = []

    def visit(node: ast.AST, depth: int) -> None:
        if depth > MAX_DEPTH:
            problems.append((where, f"expression nests deeper than {MAX_DEPTH} levels"))
            return
        if not isinstance(node, _ALLOWED_NODES):
            problems.append((where, f"{type(node).__name__} is not allowed in a formula"))
            return
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                problems.append((where, f"only numeric literals are allowed, got {node.value!r}"))
            elif abs(node.value) > MAX_LITERAL:
                problems.append((where, f"literal {node.value!r} is larger than {MAX_LITERAL:g}"))
        elif isinstance(node, ast.Name):
            if node.id.startswith("_"):
                problems.append((where, f"name {node.id!r} is not allowed"))
            elif node.id not in declared and node.id not in FUNCTIONS:
                problems.append((where, f"name {node.id!r} is not a declared input"))
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
                problems.append((where, f"function {name!r} is not allowed (allowed: {', '.join(sorted(FUNCTIONS))})"))
                return
            if node.keywords:
                problems.append((where, f"keyword arguments are not allowed in {node.func.id}()"))
            for arg in node.args:
                visit(arg, depth + 1)
            return
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            exp = node.right
            if isinstance(exp, ast.UnaryOp) and isinstance(exp.op, (ast.USub, ast.UAdd)):
                exp = exp.operand
            if not (isinstance(exp, ast.Constant) and isinstance(exp.value, (int, float))
                    and abs(exp.value) <= MAX_EXPONENT):
                problems.append((where, f"exponents must be numeric literals of at most {MAX_EXPONENT}"))
        for child in ast.iter_child_nodes(node):
            visit(child, depth + 1)

    visit(tree, 0)
    if problems:
        raise FormulaError(problems)
    degree = int_degree(tree.body, lambda name: 1)
    if degree > MAX_INT_DEGREE:
        raise FormulaError([(where, _degree_message(degree))])
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id not in FUNCTIONS}
    unused = sorted(declared - used)
    if unused:
        raise FormulaError([(where, f"declared input {unused[0]!r} is not used by the expression")])
    return tree.body


def _degree_message(degree: int) -> str:
    return (f"can build an integer of degree {degree} in its inputs (limit {MAX_INT_DEGREE}): powers of powers, "
            f"or products of many powers, make numbers too large to compute")


def int_degree(node: ast.AST, degree_of: Callable[[str], int | None]) -> int:
    """The largest integer any part of ``node`` can build, as a count of input-sized factors multiplied
    together (0 when every part is a float).

    Only integers can grow slowly enough to hang instead of overflowing, so only they are counted: a
    product adds its factors' degrees, ``x ** k`` multiplies by ``k``, a sum or ``max`` keeps the
    larger, true division and ``sqrt``/``exp``/``log`` give floats, and ``ceil``/``floor`` of a float is
    at most ~1.8e308 (degree 18). Every sub-expression counts, since ``tower * 0 + x / 8`` still
    computes the tower. ``degree_of(name)`` gives an input's degree (1 for a scenario variable; for
    another formula its own value's degree, None if it is a float).
    """
    peak = [0]

    def visit(n: ast.AST) -> int | None:
        d = _degree(n, degree_of, visit)
        if d is not None and d > peak[0]:
            peak[0] = d
        return d

    visit(node)
    return peak[0]


def value_degree(node: ast.AST, degree_of: Callable[[str], int | None]) -> int | None:
    """The degree of ``node``'s own value (None for a float): what a formula passes to those that read it."""
    return _degree(node, degree_of, lambda n: value_degree(n, degree_of))


def _degree(node: ast.AST, degree_of, visit) -> int | None:
    if isinstance(node, ast.Constant):
        return None if isinstance(node.value, float) else 1
    if isinstance(node, ast.Name):
        return degree_of(node.id)
    if isinstance(node, ast.UnaryOp):
        d = visit(node.operand)
        return 1 if isinstance(node.op, ast.Not) else d
    if isinstance(node, ast.Compare):
        for part in (node.left, *node.comparators):
            visit(part)
        return 1  # a bool
    if isinstance(node, (ast.BoolOp, ast.IfExp, ast.Call)):
        parts = node.values if isinstance(node, ast.BoolOp) else \
            [node.test, node.body, node.orelse] if isinstance(node, ast.IfExp) else node.args
        degrees = [visit(p) for p in parts]
        if isinstance(node, ast.IfExp):
            degrees = degrees[1:]
        ints = [d for d in degrees if d is not None]
        if isinstance(node, ast.Call):
            name = node.func.id  # parse_expression allows only whitelisted names here
            if name in ("sqrt", "log", "log2", "exp", "betainc"):
                return None
            if name in ("ceil", "floor"):
                return ints[0] if ints else _FLOAT_AS_INT
            if name == "argmin":  # a position: 1, 2, ...
                return 1
            if name == "round_up":  # ceil(x / multiple) * multiple: a float made whole, times the multiple
                return _FLOAT_AS_INT + ((degrees[1] or 0) if len(degrees) > 1 else 0)
        return max(ints) if ints else None
    if isinstance(node, ast.BinOp):
        left, right = visit(node.left), visit(node.right)
        op = node.op
        if isinstance(op, ast.Div):
            return None
        if isinstance(op, ast.Pow):
            exp = node.right.operand if isinstance(node.right, ast.UnaryOp) else node.right
            negative = isinstance(node.right, ast.UnaryOp) and isinstance(node.right.op, ast.USub)
            if left is None or not isinstance(exp, ast.Constant) or isinstance(exp.value, float) or negative:
                return None
            return left * max(1, abs(int(exp.value)))
        if left is None or right is None:  # a float operand makes + - * a float; // and % stay below the int
            if isinstance(op, (ast.FloorDiv, ast.Mod)) and (left is not None or right is not None):
                return left if left is not None else right
            return None
        return left + right if isinstance(op, ast.Mult) else max(left, right)
    return 1


def formula_file_from_data(data: Mapping[str, Any], *, file: str, source: str) -> FormulaFile:
    """Build a :class:`FormulaFile` from schema-valid data, parsing every expression."""
    group = data["id"]
    formulas = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in data["formulas"]:
        where = f"{file}: formula {item['id']}"
        if item["id"] in seen:
            problems.append((where, "defined twice in this file"))
            continue
        seen.add(item["id"])
        try:
            tree = parse_expression(item["expr"], where=where, declared=item["inputs"])
        except FormulaError as exc:
            problems.extend(exc.problems)
            continue
        formulas.append(Formula(
            id=item["id"], description=item["description"], inputs=tuple(item["inputs"]),
            expr=" ".join(item["expr"].split()), unit=item["unit"],
            references=tuple(item.get("references", ())), file=file, group=group, tree=tree,
            fn=compile_tree(tree, FUNCTIONS)))
    comp = None
    if data.get("component"):
        c = data["component"]
        comp = Component(group, c["label"], c["output"], tuple(c["workloads"]), int(c.get("order", 100)), file)
        if c["output"] not in seen:
            problems.append((f"{file}: component", f"output {c['output']!r} is not a formula of this file"))
    if data["kind"] == "memory_component" and comp is None:
        problems.append((f"{file}", "a memory_component file needs a `component` section"))
    if problems:
        raise FormulaError(problems)
    return FormulaFile(group, data["kind"], data["description"], file, source, tuple(formulas), comp,
                       tuple(data.get("references", ())), tuple(data.get("cases", ())))


class FormulaSet:
    """All loaded formulas, checked as a graph, evaluated in dependency order."""

    def __init__(self) -> None:
        self.files: dict[str, FormulaFile] = {}
        self.formulas: dict[str, Formula] = {}
        self.loaded_files: list[FormulaFile] = []  # every file in load order, overridden ones included
        self.overridden: dict[str, Formula] = {}  # formula id → the built-in definition an override replaced
        self._origin: dict[str, str] = {}  # formula id → source that defined it
        self._builtin: set[str] = set()  # ids whose current definition is built-in
        self._order: list[str] = []
        self._plans: dict[tuple, Any] = {}  # evaluation plans and component lists, dropped on change

    # -- building ------------------------------------------------------------------------------
    def add(self, ff: FormulaFile, *, may_override: bool) -> None:
        """Add a file's formulas. Built-ins (``may_override`` false) may not repeat an id; any later
        folder may override a built-in formula, but two folders may not both define or override one id."""
        problems = []
        for f in ff.formulas:
            if f.id not in self.formulas:
                continue
            prev = self.formulas[f.id]
            if not may_override or self._origin[f.id] == ff.source:
                problems.append((f"{ff.file}: formula {f.id}", f"already defined in {prev.file}"))
            elif f.id not in self._builtin:
                problems.append((f"{ff.file}: formula {f.id}", f"also defined by {prev.file} ({self._origin[f.id]}); "
                                 "two folders may not both define or override one formula"))
        if problems:
            raise FormulaError(problems)
        for f in ff.formulas:
            if f.id in self.formulas:
                self.overridden[f.id] = self.formulas[f.id]
                self._builtin.discard(f.id)
            elif not may_override:
                self._builtin.add(f.id)
            self.formulas[f.id] = f
            self._origin[f.id] = ff.source
        self.loaded_files.append(ff)
        if ff.id in self.files and ff.component is None:
            ff = FormulaFile(**{**ff.__dict__, "component": self.files[ff.id].component})
        self.files[ff.id] = ff
        self._plans.clear()

    def source_of(self, formula_id: str) -> str:
        """The plugin or folder that supplied a formula's current definition."""
        return self._origin[formula_id]

    def snapshot(self) -> tuple:
        """The set's state, to :meth:`restore` when a plugin's formulas turn out not to fit."""
        return (dict(self.files), dict(self.formulas), list(self.loaded_files), dict(self.overridden),
                dict(self._origin), set(self._builtin))

    def restore(self, state: tuple) -> None:
        files, formulas, loaded, overridden, origin, builtin = state
        self.files, self.formulas, self.loaded_files, self.overridden = dict(files), dict(formulas), list(loaded), dict(overridden)
        self._origin, self._builtin = dict(origin), set(builtin)
        self._plans.clear()

    def components(self, workload: str) -> tuple[Component, ...]:
        """The memory components of a workload, in display order (cached until formulas change)."""
        key = ("components", workload)
        comps = self._plans.get(key)
        if comps is None:
            comps = tuple(sorted((ff.component for ff in self.files.values()
                                  if ff.component and workload in ff.component.workloads),
                                 key=lambda c: (c.order, c.id)))
            self._plans[key] = comps
        return comps

    def finalize(self, known_names: Iterable[str]) -> None:
        """Check every input names a scenario variable or a formula, and that nothing is circular."""
        known = set(known_names)
        problems = []
        for f in self.formulas.values():
            for name in f.inputs:
                if name not in known and name not in self.formulas:
                    problems.append((f"{f.file}: formula {f.id}", f"input {name!r} is neither a scenario variable nor a formula id"))
        for ff in self.files.values():
            if ff.component and ff.component.output not in self.formulas:
                problems.append((ff.file, f"component output {ff.component.output!r} is not defined"))
        if problems:
            raise FormulaError(problems)
        self._order = self._toposort()
        degrees: dict[str, int | None] = {}
        for fid in self._order:  # degrees compound along the graph: bound them over it, not per formula
            f = self.formulas[fid]
            degree_of = lambda name: degrees.get(name, 1)  # noqa: E731
            peak = int_degree(f.tree, degree_of)
            degrees[fid] = value_degree(f.tree, degree_of)
            if peak > MAX_INT_DEGREE:
                problems.append((f"{f.file}: formula {fid}", _degree_message(peak) + " (with the formulas it reads)"))
        if problems:
            raise FormulaError(problems)
        self._plans.clear()

    def _toposort(self) -> list[str]:
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(fid: str, stack: list[str]) -> None:
            s = state.get(fid)
            if s == 2:
                return
            if s == 1:
                cycle = " → ".join(stack[stack.index(fid):] + [fid])
                raise FormulaError([(self.formulas[fid].file, f"formulas depend on each other in a circle: {cycle}")])
            state[fid] = 1
            for name in self.formulas[fid].inputs:
                if name in self.formulas:
                    visit(name, stack + [fid])
            state[fid] = 2
            order.append(fid)

        for fid in sorted(self.formulas):
            visit(fid, [])
        return order

    def plan(self, targets: Iterable[str]) -> list[Formula]:
        """The formulas needed for ``targets``, in evaluation order (cached; a tuple is its own key)."""
        key = targets if isinstance(targets, tuple) else tuple(sorted(set(targets)))
        plan = self._plans.get(key)
        if plan is None:
            needed: set[str] = set()
            stack = [t for t in key if t in self.formulas]
            while stack:
                fid = stack.pop()
                if fid in needed:
                    continue
                needed.add(fid)
                stack.extend(n for n in self.formulas[fid].inputs if n in self.formulas)
            plan = [self.formulas[fid] for fid in self._order if fid in needed]
            self._plans[key] = plan
        return plan

    # -- evaluating ----------------------------------------------------------------------------
    def evaluate(self, scenario: Mapping[str, float], targets: Iterable[str], *, trace: list | None = None) -> dict[str, float]:
        """Evaluate what ``targets`` need on top of ``scenario``; return scenario + results."""
        values: dict[str, float] = dict(scenario)
        plan = self.plan(targets)
        if trace is None and evaluator_name() == "compiled":
            f = None
            try:  # the hot path: one try around the loop, closures compiled at load
                for f in plan:
                    value = f.fn(values)
                    cls = value.__class__  # bool is not int here: True/False go through the full check
                    if cls is float:
                        if value - value != 0:  # inf or nan
                            value = semantics.checked(f.id, f.file, value)
                    elif cls is not int or not -MAX_VALUE <= value <= MAX_VALUE:
                        value = semantics.checked(f.id, f.file, value)
                    values[f.id] = value
            except FormulaError:
                raise
            except Exception as exc:
                _run(f, lambda: (_ for _ in ()).throw(exc))
            return values
        run = _runner(values)
        for f in plan:
            values[f.id] = run(f)
            if trace is not None:
                trace.append({"id": f.id, "expr": f.expr, "unit": f.unit, "file": f.file,
                              "inputs": {n: values[n] for n in f.inputs}, "value": values[f.id]})
        return values

    def evaluate_one(self, formula_id: str, inputs: Mapping[str, float], *, evaluator: str | None = None) -> float:
        """Evaluate one formula on given inputs (golden cases)."""
        f = self.formulas[formula_id]
        missing = [n for n in f.inputs if n not in inputs]
        if missing:
            raise FormulaError([(f"formula {formula_id}", f"missing inputs: {', '.join(missing)}")])
        return _runner(dict(inputs), evaluator)(f)


#: The evaluators ``VRAMPLAN_EVALUATOR`` may name; unset or empty means the first, the default.
EVALUATORS = ("compiled", "simpleeval")


def evaluator_name(name: str | None = None) -> str:
    """The evaluator to use: ``name``, else ``VRAMPLAN_EVALUATOR``, else the default (compiled closures)."""
    chosen = name or os.environ.get("VRAMPLAN_EVALUATOR") or EVALUATORS[0]
    if chosen not in EVALUATORS:
        raise FormulaError([("VRAMPLAN_EVALUATOR", f"{chosen!r} is not an evaluator (choose {' or '.join(EVALUATORS)})")])
    return chosen


def _runner(values: dict[str, float], evaluator: str | None = None) -> Callable[[Formula], float]:
    """Evaluate formulas against ``values``: compiled closures, or simpleeval when asked."""
    if evaluator_name(evaluator) == "simpleeval":
        se = simpleeval.SimpleEval(operators=semantics.OPERATORS, functions=FUNCTIONS, names=values)
        return lambda f: _run(f, lambda: se.eval(f.expr, previously_parsed=f.tree))
    return lambda f: _run(f, lambda: f.fn(values))


def _fail(f: Formula, what: str) -> FormulaError:
    """A :class:`FormulaError` naming the formula; ``.formula`` carries its id for the caller."""
    return semantics.refused(f.id, f.file, what)


def _run(f: Formula, compute: Callable[[], Any]) -> float:
    """One formula's checked value, or a :class:`FormulaError` naming it and the reason."""
    try:
        value = compute()
    except simpleeval.InvalidExpression as exc:  # not reached for a checked tree; kept as a clean error
        raise _fail(f, f"cannot be evaluated: {exc}") from None
    except Exception as exc:
        reason = semantics.refusal(exc)
        if reason is None:
            raise
        raise _fail(f, reason) from None
    value, reason = semantics.check(value)
    if reason:
        raise _fail(f, reason)
    return value
