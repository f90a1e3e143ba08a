"""Rollout guards: what the non-control variants of a rollout service served over its guard
window, and whether a guard is crossed (the feature server then moves the split back)."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from featurestore.client.responses import OnlineResponse
from featurestore.plan import GuardPlan, ServicePlan

MIN_ROWS = 20
"""Rows of the other variants a window needs before a guard may be judged crossed."""
_MAX_STALENESS_SAMPLES = 256


@dataclass
class _Seen:
    """What one response's rows of the other variants showed."""

    at: float
    rows: int
    nulls: dict[str, int]
    compared: dict[str, tuple[int, int]]
    staleness_s: list[float]


@dataclass
class _Window:
    service: ServicePlan
    started: float
    seen: deque[_Seen] = field(default_factory=deque)


class GuardWatch:
    """Per rollout service with guards, the responses of its guard window (kept in memory)."""

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}

    def _window(self, service: ServicePlan, now: float) -> _Window:
        w = self._windows.get(service.name)
        if w is None or w.service != service:  # a new split or new guards start a new window
            w = self._windows[service.name] = _Window(service, now)
        return w

    def observe(self, service: ServicePlan, response: OnlineResponse, mismatches: Mapping[str, tuple[int, int]],
                now: float) -> None:
        """Count what `response` served from variants other than the control."""
        variants = response.variants or []
        others = [i for i, v in enumerate(variants) if v != service.control]
        w = self._window(service, now)
        if others:
            nulls = {name: sum(response.column(name)[i] is None for i in others) for name in response.feature_names}
            ages = []
            read_at = response.read_at_ms or 0
            for name in response.feature_names:
                events = response.event_time_ms(name)
                ages += [(read_at - t) / 1000 for t in (events[i] for i in others) if t is not None]
            w.seen.append(_Seen(now, len(others), nulls, dict(mismatches), ages[:_MAX_STALENESS_SAMPLES]))
        edge = now - service.guard_window_ms / 1000
        while w.seen and w.seen[0].at < edge:
            w.seen.popleft()

    def crossed(self, service: ServicePlan, now: float) -> tuple[GuardPlan, str] | None:
        """The first guard crossed over a whole guard window, and why (None: none is)."""
        w = self._windows.get(service.name)
        if w is None or now - w.started < service.guard_window_ms / 1000:
            return None
        rows = sum(s.rows for s in w.seen)
        if rows < MIN_ROWS:
            return None
        for guard in service.guards:
            value = _measure(guard, w.seen, rows)
            if value is not None and value > guard.max:
                what = f"{guard.metric}{f' of {guard.feature}' if guard.feature else ''}"
                return guard, (f"{what} {value:.4g} > {guard.max:g} over the last {service.guard_window_ms / 1000:g} s "
                               f"({rows:,} rows of variants other than '{service.control}')")
        return None

    def reset(self, name: str) -> None:
        self._windows.pop(name, None)


def _measure(guard: GuardPlan, seen: deque[_Seen], rows: int) -> float | None:
    if guard.metric == "null_rate":
        names = [guard.feature] if guard.feature else sorted({n for s in seen for n in s.nulls})
        values = [s.nulls.get(n, 0) for s in seen for n in names]
        return sum(values) / (rows * len(names)) if names else None
    if guard.metric == "mismatch_rate":
        pairs = [c for s in seen for n, c in s.compared.items() if guard.feature in (None, n)]
        compared = sum(c for c, _ in pairs)
        return sum(m for _, m in pairs) / compared if compared else None
    ages = sorted(a for s in seen for a in s.staleness_s)
    return ages[min(len(ages) - 1, int(0.99 * len(ages)))] if ages else None
