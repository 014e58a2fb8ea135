"""Arithmetic for schedule strings, read by the studio's own allow-list: never eval, numexpr or
anything that can reach a Python object (a schedule typed on a shared link is hostile input).

    Expression("1.0025 + 0.002*sin(1.25*pi*t/30)", names=("t", "max_f", "s"))(t=12, max_f=59, s=7)

Allowed: numbers, the variables named, pi and e, + - * / // % **, comparisons (1.0 or 0.0), and
the functions in FUNCTIONS. The text is parsed once and checked node by node; what is not on the
list is refused with a message that names it. Powers and results are bounded, so `9**9**9` is a
clear error, not a hung server.
"""

from __future__ import annotations

import ast
import math
import operator

from studio.errors import InvalidRequest

MAX_CHARS = 400
MAX_NODES = 120
MAX_MAGNITUDE = 1e15        # any value beyond this is a mistake, not a zoom


class ScheduleError(InvalidRequest):
    """A schedule or expression the studio cannot read; the message says where and why."""


def _where(condition: float, a: float, b: float) -> float:
    return a if condition else b


def _clamp(x: float, low: float, high: float) -> float:
    return min(max(x, low), high)


FUNCTIONS = {
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos,
    "atan": math.atan, "abs": abs, "min": min, "max": max, "floor": math.floor, "ceil": math.ceil,
    "round": round, "sqrt": math.sqrt, "exp": math.exp, "log": math.log, "log10": math.log10,
    "where": _where, "clamp": _clamp,
}
CONSTANTS = {"pi": math.pi, "e": math.e}


def _pow(base: float, exponent: float) -> float:
    if abs(exponent) > 64 or (abs(base) > 1e6 and abs(exponent) > 2):
        raise ScheduleError(f"{base:g} ** {exponent:g} is too large a power.")
    return base ** exponent


BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
          ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: _pow}
UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
           ast.Eq: operator.eq, ast.NotEq: operator.ne}
ALLOWED = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Call, ast.Name, ast.Constant, ast.Load,
           *BINARY, *UNARY, *COMPARE)


class Expression:
    """One arithmetic expression, checked when made; call it with the variables' values."""

    def __init__(self, text: str, names: tuple[str, ...] = ("t",)):
        self.text, self.names = text.strip(), names
        if not self.text:
            raise ScheduleError("An empty expression.")
        if len(self.text) > MAX_CHARS:
            raise ScheduleError(f"An expression is {len(self.text)} characters; at most {MAX_CHARS}.")
        try:
            tree = ast.parse(self.text, mode="eval")
        except (SyntaxError, ValueError) as exc:
            raise ScheduleError(f"Cannot read {self.text!r} as arithmetic: {exc.msg if hasattr(exc, 'msg') else exc}.") \
                from None
        nodes = list(ast.walk(tree))
        if len(nodes) > MAX_NODES:
            raise ScheduleError(f"{self.text!r} is too long an expression ({len(nodes)} parts; at most {MAX_NODES}).")
        callees = {id(n.func) for n in nodes if isinstance(n, ast.Call)}
        for node in nodes:
            self._check(node, id(node) in callees)
        self.tree = tree.body

    def _check(self, node: ast.AST, callee: bool) -> None:
        if not isinstance(node, ALLOWED):
            raise ScheduleError(f"{self.text!r}: {type(node).__name__} is not allowed in a schedule "
                                f"(numbers, {', '.join(self.names)}, arithmetic and {', '.join(FUNCTIONS)}).")
        if isinstance(node, ast.Constant) and (isinstance(node.value, bool) or
                                               not isinstance(node.value, (int, float))):
            raise ScheduleError(f"{self.text!r}: only numbers may appear, not {node.value!r}.")
        if isinstance(node, ast.Name) and not callee and node.id not in self.names and node.id not in CONSTANTS:
            raise ScheduleError(f"{self.text!r}: unknown name {node.id!r}; the variables are "
                                f"{', '.join(self.names)} (and pi, e).")
        if isinstance(node, ast.Call) and (not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS
                                           or node.keywords):
            raise ScheduleError(f"{self.text!r}: only these functions may be called, with plain "
                                f"arguments: {', '.join(FUNCTIONS)}.")

    def __call__(self, **values: float) -> float:
        try:
            result = self._value(self.tree, values)
        except ScheduleError:
            raise
        except ZeroDivisionError:
            raise ScheduleError(f"{self.text!r} divides by zero at {_where_at(values)}.") from None
        except (ValueError, OverflowError, TypeError) as exc:
            raise ScheduleError(f"{self.text!r} has no value at {_where_at(values)}: {exc}.") from None
        return float(result)

    def _value(self, node: ast.AST, values: dict) -> float:
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            return float(values[node.id]) if node.id in self.names else CONSTANTS[node.id]
        if isinstance(node, ast.BinOp):
            out = BINARY[type(node.op)](self._value(node.left, values), self._value(node.right, values))
        elif isinstance(node, ast.UnaryOp):
            out = UNARY[type(node.op)](self._value(node.operand, values))
        elif isinstance(node, ast.Compare):
            left, out = self._value(node.left, values), 1.0
            for op, right_node in zip(node.ops, node.comparators):
                right = self._value(right_node, values)
                out, left = (out if COMPARE[type(op)](left, right) else 0.0), right
        elif node.func.id == "where" and len(node.args) == 3:   # only the branch taken is worked out
            chosen = node.args[1] if self._value(node.args[0], values) else node.args[2]
            out = self._value(chosen, values)
        else:   # a call of FUNCTIONS, checked when parsed
            out = FUNCTIONS[node.func.id](*(self._value(a, values) for a in node.args))
        if not math.isfinite(out) or abs(out) > MAX_MAGNITUDE:
            raise ScheduleError(f"{self.text!r} grows out of range ({out:g}) at {_where_at(values)}.")
        return out


def _where_at(values: dict) -> str:
    return ", ".join(f"{k} = {v:g}" for k, v in values.items()) or "every frame"
