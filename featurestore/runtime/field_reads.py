"""Which event fields a transform reads, when reading fields is all it does with its event.

A transform is called with each event. When its source shows that the event is used only to
read model fields (`event.amount`, `event.currency`), the transform gives the same result
when called with any object holding those fields' values, so a batch checked column by column
(`featurestore.runtime.columnar`) need not build a model per event: a light record of the
fields it reads does. Anything else — the event passed on, compared, mutated, rebound, read
through `getattr`, a method or property of the model, a decorated function, a lambda, a
callable object — keeps the model.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
from collections import namedtuple
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel


def fields_read(fn: Callable[[Any], Any], model: type[BaseModel]) -> tuple[str, ...] | None:
    """The model fields `fn` reads from its one argument, in order of first use; None when it
    may do anything else with it (or its source cannot be read)."""
    if not inspect.isfunction(fn) or fn.__name__ == "<lambda>" or hasattr(fn, "__wrapped__"):
        return None
    code = fn.__code__
    if code.co_argcount != 1 or code.co_kwonlyargcount or code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS):
        return None
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return None
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    if len(defs) != 1 or not isinstance(defs[0], ast.FunctionDef) or defs[0].decorator_list or defs[0].name != fn.__name__:
        return None
    func = defs[0]
    if not _same_code(tree, code):
        return None  # the file changed since it was imported, or the function is a closure
    param = func.args.args[0].arg if len(func.args.args) == 1 and not func.args.posonlyargs else None
    if param is None:
        return None
    fields = set(model.model_fields)
    read: dict[str, None] = {}
    reads = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == param:
            if not isinstance(node.ctx, ast.Load) or node.attr not in fields:
                return None
            read[node.attr] = None
            reads.add(id(node.value))
    for node in ast.walk(func):
        if isinstance(node, ast.Name) and node.id == param and id(node) not in reads:
            return None  # used otherwise: passed on, compared, rebound, deleted
        if isinstance(node, ast.arg) and node.arg == param and node is not func.args.args[0]:
            return None  # a nested function or lambda names its own argument alike
        if param in _bound_names(node):
            return None
    return tuple(read)


def _bound_names(node: ast.AST) -> set[str]:
    """Names a statement or pattern binds without an `ast.Name`."""
    if isinstance(node, ast.Global | ast.Nonlocal):
        return set(node.names)
    if isinstance(node, ast.alias):
        return {node.asname or node.name.partition(".")[0]}
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar):
        return {node.name} if node.name else set()
    if isinstance(node, ast.MatchMapping):
        return {node.rest} if node.rest else set()
    return set()


def _same_code(tree: ast.Module, code: Any) -> bool:
    """Whether the parsed definition compiles to the function's own bytecode."""
    try:
        module = compile(tree, "<transform>", "exec")
    except (SyntaxError, ValueError):
        return False
    compiled = [c for c in module.co_consts if inspect.iscode(c)]
    return len(compiled) == 1 and compiled[0].co_code == code.co_code and compiled[0].co_names == code.co_names


@functools.lru_cache(maxsize=256)
def record_type(fields: tuple[str, ...]) -> type[tuple[Any, ...]]:
    """A light record class holding `fields` as attributes (built positionally)."""
    return namedtuple("EventFields", fields)
