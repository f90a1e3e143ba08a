"""Request-time features: the repository's functions run over request fields and stored
feature values, one row at a time — the same code for an online read and a training set.

A function that raises, returns the wrong type or overruns its time budget gives that one
value the status `error` (with the reason); the rest of the request is answered. Online, each
call has a time budget (`request_feature_budget_ms`): on the main thread a timer interrupts
a runaway function; elsewhere the call runs on a small pool and is abandoned when late.
"""

from __future__ import annotations

import datetime as dt
import signal
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from featurestore import metrics
from featurestore.errors import FeatureRequestError
from featurestore.plan import Plan, RequestFeaturePlan, RequestViewPlan
from featurestore.plan.validate import request_feature_order
from featurestore.runtime.imports import import_object

ERROR = "error"
_POOL_WORKERS = 4


@dataclass
class Computed:
    """One request-time feature over the rows: values, and per row the reason it failed."""

    values: list[Any]
    errors: list[str | None]


class _Overrun(BaseException):
    """Raised into a function that ran past its budget (a BaseException: `except Exception`
    in user code does not swallow it)."""


_armed = False
"""Whether a budget timer runs (a SIGALRM then means: the call overran)."""
_previous_handler: Any = None
_installed = False


def _interrupt(signum: int, frame: Any) -> None:
    if _armed:
        raise _Overrun
    if callable(_previous_handler):  # not ours: whoever handled SIGALRM before
        _previous_handler(signum, frame)


class _Budget:
    """Runs calls with at most `seconds` each (None: no limit)."""

    _pool: ThreadPoolExecutor | None = None

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._timer = seconds is not None and threading.current_thread() is threading.main_thread()

    def __enter__(self) -> _Budget:
        global _previous_handler, _installed
        if self._timer and not _installed:  # installed once, kept (it passes other alarms on)
            _previous_handler = signal.signal(signal.SIGALRM, _interrupt)
            _installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def call(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        if self.seconds is None:
            return fn(**kwargs)
        if self._timer:
            global _armed
            _armed = True
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
            try:
                return fn(**kwargs)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                _armed = False
        if _Budget._pool is None:
            _Budget._pool = ThreadPoolExecutor(_POOL_WORKERS, thread_name_prefix="request-features")
        future = _Budget._pool.submit(fn, **kwargs)
        try:
            return future.result(timeout=self.seconds)
        except FutureTimeout:
            raise _Overrun from None


def _positional(fn: Callable[..., Any], params: list[str]) -> bool:
    """Whether the function takes exactly `params`, in order, as positional parameters."""
    import inspect

    try:
        sig = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    return [p.name for p in sig] == params and all(p.kind == p.POSITIONAL_OR_KEYWORD for p in sig)


def checked(value: Any, dtype: str) -> tuple[Any, str | None]:
    """The value as its declared type, or (None, why not)."""
    if value is None:
        return None, None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalars
    if dtype == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), None
    if dtype == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value, None
    if (dtype == "str" and isinstance(value, str)) or (dtype == "bool" and isinstance(value, bool)):
        return value, None
    if dtype == "datetime" and isinstance(value, dt.datetime):
        return value, None
    return None, f"returned {type(value).__name__} {value!r:.60}, expected {dtype}"


def stored_ref(plan: Plan, ref: str) -> str:
    """A reference to a stored feature with its view's id (`view:f` -> the serving version's)."""
    view, _, name = ref.partition(":")
    return f"{plan.resolve_view(view).name}:{name}"


def request_closure(plan: Plan, refs: Iterable[str]) -> tuple[list[str], list[str]]:
    """For the request-time references among `refs`: every request-time feature to compute
    (in dependency order) and the stored features ("view-id:feature") they read. Pure: needs
    the plan only, not the functions."""
    if not plan.request_views:  # the common case, on every request of the server
        return [], []
    features = {f"{v.name}:{f.name}": f for v in plan.request_views for f in v.features}
    wanted: set[str] = set()
    stack = [r for r in refs if r in features]
    if not stack:
        return [], []
    stored: dict[str, None] = {}
    while stack:
        ref = stack.pop()
        if ref in wanted:
            continue
        wanted.add(ref)
        for i in features[ref].inputs:
            if i.feature is None:
                continue
            if i.feature in features:
                stack.append(i.feature)
            else:
                stored[stored_ref(plan, i.feature)] = None
    return [r for r in request_feature_order(plan) or [] if r in wanted], list(stored)


class RequestFeatureRunner:
    """Computes the request-time features of one plan (functions imported from the repository only)."""

    def __init__(self, plan: Plan, code_root: Path, budget_ms: float | None = None) -> None:
        self.plan = plan
        self.budget_s = None if budget_ms is None else budget_ms / 1000
        self.order = request_feature_order(plan) or []
        self.features: dict[str, tuple[RequestViewPlan, RequestFeaturePlan]] = {
            f"{v.name}:{f.name}": (v, f) for v in plan.request_views for f in v.features}
        self.stored_refs = {i.feature: stored_ref(plan, i.feature) for _, f in self.features.values() for i in f.inputs
                            if i.feature is not None and i.feature not in self.features}
        """Each stored input as written -> with its view's id."""
        self.functions: dict[str, Callable[..., Any]] = {
            ref: import_object(f.udf_ref, code_root) for ref, (_, f) in self.features.items()}
        self.models: dict[str, type[BaseModel]] = {
            s.name: import_object(s.schema_ref, code_root) for s in plan.request_sources}
        self.positional = {ref: _positional(self.functions[ref], [i.param for i in f.inputs])
                           for ref, (_, f) in self.features.items()}

    def closure(self, refs: Iterable[str]) -> tuple[list[str], list[str]]:
        """See `request_closure`."""
        return request_closure(self.plan, refs)

    def request_rows(self, source: str, rows: Sequence[Mapping[str, Any]], request_data: Mapping[str, Any] | None,
                     ) -> dict[str, list[Any]]:
        """The request fields of each entity row as columns, validated row by row by the request
        model: taken from the row, else from `request_data` (a value for every row, or a list
        with one per row). An invalid row fails the request, naming the row and the field."""
        model = self.models[source]
        fields = list(model.model_fields)
        extra = dict(request_data or {})
        n = len(rows)
        for name, value in extra.items():
            if isinstance(value, (list, tuple)) and len(value) != n:
                raise FeatureRequestError(f"request_data['{name}'] has {len(value)} values for {n} entity rows")
        out: dict[str, list[Any]] = {f: [] for f in fields}
        for i, row in enumerate(rows):
            data = {}
            for name in fields:
                if name in row:
                    data[name] = row[name]
                elif name in extra:
                    value = extra[name]
                    data[name] = value[i] if isinstance(value, (list, tuple)) else value
            try:
                valid = model.model_validate(data)
            except ValidationError as exc:
                raise _invalid(source, i, exc) from None
            for name in fields:
                out[name].append(getattr(valid, name))
        return out

    def request_columns(self, source: str, columns: Mapping[str, list[Any]], n: int) -> dict[str, list[Any]]:
        """As `request_rows` for whole columns (a training set): each field's column validated at
        once by the field's own type and constraints; a model with validators of its own, or a
        column that fails, is validated row by row (to name the failing row)."""
        model = self.models[source]
        if _has_validators(model):
            return self.request_rows(source, [dict(zip(columns, values)) for values in zip(*columns.values())]
                                     if columns else [{} for _ in range(n)], None)
        out: dict[str, list[Any]] = {}
        for name, info in model.model_fields.items():
            if name not in columns:
                if info.is_required():
                    raise FeatureRequestError(f"the entity rows have no column '{name}', a field of request source "
                                              f"'{source}' that request-time features read")
                out[name] = [info.get_default(call_default_factory=True)] * n
                continue
            try:
                out[name] = _column_adapter(model, name).validate_python(columns[name])
            except ValidationError:
                return self.request_rows(source, [dict(zip(columns, values)) for values in zip(*columns.values())], None)
        return out

    def compute(self, refs: Sequence[str], n: int, request: Mapping[str, Mapping[str, list[Any]]],
                stored: Mapping[str, list[Any]], budget: bool = True) -> dict[str, Computed]:
        """Compute `refs` (in dependency order, see `closure`) for n rows; `request` holds each
        request source's field columns, `stored` each stored input feature's values. With
        `budget` every call is timed (online); without, the rows run in one tight loop and
        only a failure makes them run one by one (training sets)."""
        done: dict[str, Computed] = {}
        with _Budget(self.budget_s if budget else None) as limit:
            for ref in refs:
                view, feature = self.features[ref]
                req = request[view.request_source]
                args = [_input_column(i.field, i.feature and self.stored_refs.get(i.feature, i.feature), req, done, stored)
                        for i in feature.inputs]
                params = [i.param for i in feature.inputs]
                out = None if budget else _all_at_once(self.functions[ref], args, self.positional[ref], params, n)
                if out is None:
                    out = _one_by_one(self.functions[ref], args, params, n, limit, self.budget_s)
                values, errors = out
                if any(e is None for e in errors) and not _all_of_type(values, feature.dtype):
                    for row, value in enumerate(values):
                        if errors[row] is None:
                            values[row], errors[row] = checked(value, feature.dtype)
                failed = sum(e is not None for e in errors)
                if failed:
                    metrics.REQUEST_FEATURE_ERRORS.labels(view.name, feature.name).inc(failed)
                done[ref] = Computed(values, errors)
        return done


def _input_column(field: str | None, feature: str | None, request: Mapping[str, list[Any]], done: Mapping[str, Computed],
                  stored: Mapping[str, list[Any]]) -> list[Any]:
    """The values one parameter receives: a request field's column, or a feature's values."""
    if field is not None:
        return request[field]
    assert feature is not None
    return done[feature].values if feature in done else stored[feature]


def _invalid(source: str, row: int, exc: ValidationError) -> FeatureRequestError:
    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
    return FeatureRequestError(
        f"request data of entity row {row} for request source '{source}': {problems} (add them to each entity "
        "row, on the command line -e key=1,field=value, or pass request_data)")


def _has_validators(model: type[BaseModel]) -> bool:
    decorators = model.__pydantic_decorators__
    return bool(decorators.field_validators or decorators.model_validators or decorators.root_validators
                or decorators.validators)


_adapters: dict[tuple[type[BaseModel], str], TypeAdapter[Any]] = {}


def _column_adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    """Validates a list of one field's values with the field's type and constraints."""
    key = (model, name)
    hit = _adapters.get(key)
    if hit is None:
        info = model.model_fields[name]
        field_type = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        hit = _adapters[key] = TypeAdapter(list[field_type])  # type: ignore[valid-type]  # a type built at run time from the model's field
    return hit


def _all_at_once(fn: Callable[..., Any], args: list[list[Any]], positional: bool, params: list[str],
                 n: int) -> tuple[list[Any], list[str | None]] | None:
    """Every row in one loop; None when a row raised (then they run one by one)."""
    try:
        if positional:
            values = [fn(*row) for row in zip(*args)] if args else [fn() for _ in range(n)]
        else:
            values = [fn(**dict(zip(params, row))) for row in zip(*args)] if args else [fn() for _ in range(n)]
    except Exception:  # user code: find which rows fail, and why
        return None
    return values, [None] * n


def _one_by_one(fn: Callable[..., Any], args: list[list[Any]], params: list[str], n: int, limit: _Budget,
                budget_s: float | None) -> tuple[list[Any], list[str | None]]:
    values: list[Any] = [None] * n
    errors: list[str | None] = [None] * n
    for row in range(n):
        kwargs = {p: col[row] for p, col in zip(params, args)}
        try:
            values[row] = limit.call(fn, kwargs)
        except _Overrun:
            errors[row] = f"ran longer than its budget of {budget_s * 1000:g} ms" if budget_s else "overran"
        except Exception as exc:  # user code: the value fails, not the request
            errors[row] = f"{type(exc).__name__}: {exc}"
    return values, errors


_EXACT = {"int": int, "float": float, "str": str, "bool": bool, "datetime": dt.datetime}


def _all_of_type(values: list[Any], dtype: str) -> bool:
    """Whether every value is None or exactly of the declared type (nothing to convert)."""
    want = _EXACT[dtype]
    return all(v is None or type(v) is want for v in values)
