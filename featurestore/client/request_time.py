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
from typing import Any

from pydantic import BaseModel, ValidationError

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


def _interrupt(_signum: int, _frame: Any) -> None:
    raise _Overrun


class _Budget:
    """Runs calls with at most `seconds` each (None: no limit)."""

    _pool: ThreadPoolExecutor | None = None

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._timer = seconds is not None and threading.current_thread() is threading.main_thread()
        self._previous: Any = None

    def __enter__(self) -> _Budget:
        if self._timer:
            self._previous = signal.signal(signal.SIGALRM, _interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)

    def call(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        if self.seconds is None:
            return fn(**kwargs)
        if self._timer:
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
            try:
                return fn(**kwargs)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        if _Budget._pool is None:
            _Budget._pool = ThreadPoolExecutor(_POOL_WORKERS, thread_name_prefix="request-features")
        future = _Budget._pool.submit(fn, **kwargs)
        try:
            return future.result(timeout=self.seconds)
        except FutureTimeout:
            raise _Overrun from None


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


def request_closure(plan: Plan, refs: Iterable[str]) -> tuple[list[str], list[str]]:
    """For the request-time references among `refs`: every request-time feature to compute
    (in dependency order) and the stored features ("view:feature") they read. Pure: needs
    the plan only, not the functions."""
    features = {f"{v.name}:{f.name}": f for v in plan.request_views for f in v.features}
    wanted: set[str] = set()
    stack = [r for r in refs if r in features]
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
                stored[i.feature] = None
    return [r for r in request_feature_order(plan) or [] if r in wanted], list(stored)


class RequestFeatureRunner:
    """Computes the request-time features of one plan (functions imported from the repository only)."""

    def __init__(self, plan: Plan, code_root: Path, budget_ms: float | None = None) -> None:
        self.plan = plan
        self.budget_s = None if budget_ms is None else budget_ms / 1000
        self.order = request_feature_order(plan) or []
        self.features: dict[str, tuple[RequestViewPlan, RequestFeaturePlan]] = {
            f"{v.name}:{f.name}": (v, f) for v in plan.request_views for f in v.features}
        self.functions: dict[str, Callable[..., Any]] = {
            ref: import_object(f.udf_ref, code_root) for ref, (_, f) in self.features.items()}
        self.models: dict[str, type[BaseModel]] = {
            s.name: import_object(s.schema_ref, code_root) for s in plan.request_sources}

    def closure(self, refs: Iterable[str]) -> tuple[list[str], list[str]]:
        """See `request_closure`."""
        return request_closure(self.plan, refs)

    def request_rows(self, source: str, rows: Sequence[Mapping[str, Any]], request_data: Mapping[str, Any] | None,
                     ) -> list[dict[str, Any]]:
        """Each entity row's request fields, validated by the request model: taken from the row,
        else from `request_data` (a value for every row, or a list with one per row)."""
        model = self.models[source]
        fields = list(model.model_fields)
        extra = dict(request_data or {})
        n = len(rows)
        for name, value in extra.items():
            if isinstance(value, (list, tuple)) and len(value) != n:
                raise FeatureRequestError(f"request_data['{name}'] has {len(value)} values for {n} entity rows")
        out = []
        for i, row in enumerate(rows):
            data = {}
            for name in fields:
                if name in row:
                    data[name] = row[name]
                elif name in extra:
                    value = extra[name]
                    data[name] = value[i] if isinstance(value, (list, tuple)) else value
            try:
                out.append(dict(model.model_validate(data)))
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
                raise FeatureRequestError(
                    f"request data of entity row {i} for request source '{source}': {problems} (add them to each entity "
                    "row, on the command line -e key=1,field=value, or pass request_data)") from None
        return out

    def compute(self, refs: Sequence[str], n: int, request: Mapping[str, list[dict[str, Any]]],
                stored: Mapping[str, list[Any]], budget: bool = True) -> dict[str, Computed]:
        """Compute `refs` (in dependency order, see `closure`) for n rows; `request` holds each
        request source's rows, `stored` each stored input feature's values."""
        done: dict[str, Computed] = {}
        with _Budget(self.budget_s if budget else None) as limit:
            for ref in refs:
                view, feature = self.features[ref]
                fn = self.functions[ref]
                req = request[view.request_source]
                from_request = [(i.param, i.field) for i in feature.inputs if i.field is not None]
                from_features = [(i.param, done[i.feature].values if i.feature in done else stored[i.feature])
                                 for i in feature.inputs if i.feature is not None]
                values: list[Any] = [None] * n
                errors: list[str | None] = [None] * n
                failed = 0
                for row in range(n):
                    kwargs = {p: req[row][f] for p, f in from_request}
                    for p, col in from_features:
                        kwargs[p] = col[row]
                    try:
                        result = limit.call(fn, kwargs)
                    except _Overrun:
                        errors[row] = f"ran longer than its budget of {self.budget_s * 1000:g} ms" if self.budget_s else "overran"
                        failed += 1
                        continue
                    except Exception as exc:  # user code: the value fails, not the request
                        errors[row] = f"{type(exc).__name__}: {exc}"
                        failed += 1
                        continue
                    values[row], errors[row] = checked(result, feature.dtype)
                    failed += errors[row] is not None
                if failed:
                    metrics.REQUEST_FEATURE_ERRORS.labels(view.name, feature.name).inc(failed)
                done[ref] = Computed(values, errors)
        return done
