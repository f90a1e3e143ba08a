"""Prometheus alerting rules for a plan: freshness objectives, consumer lag, dead-letter rate,
values served missing, drift (`featurestore monitor`'s metrics), repairs of the online store
and rolled-back rollouts.

`featurestore alerts` writes them as a rules file (`promtool check rules` accepts it); load it
into Prometheus next to the scrape jobs of the processors (`metrics_address`) and servers.
Metric names come from `featurestore.metrics`, where they are defined once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from featurestore import metrics
from featurestore.plan import Plan


@dataclass(frozen=True)
class Thresholds:
    """What counts as a problem, and for how long before an alert fires."""

    max_lag: int = 100_000
    """Records behind per topic."""
    max_dead_letter_rate: float = 0.01
    """Share of a topic's records dead-lettered."""
    max_missing_rate: float = 0.2
    """Share of values served that are not present (not_found, null, expired, stale)."""
    max_psi: float = 0.25
    """Population stability index of a feature against its reference (`featurestore monitor`)."""
    window: str = "5m"
    """Range of rates and quantiles."""
    hold: str = "5m"
    """How long a condition lasts before its alert fires."""


def _q(value: str) -> str:
    """A PromQL string literal (plan names hold no quote or backslash; escaped all the same)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def alert_rules(plan: Plan, project: str, t: Thresholds = Thresholds()) -> dict[str, Any]:
    """The rules file (as data) for a plan."""
    fresh = metrics.FRESHNESS.name
    rules: list[dict[str, Any]] = []
    for view in plan.views:
        if view.freshness_slo_ms is None:
            continue
        slo = view.freshness_slo_ms / 1000
        rules.append({
            "alert": "FeatureFreshnessObjectiveMissed",
            "expr": f"histogram_quantile(0.99, sum by (le) (rate({fresh}_bucket{{view={_q(view.name)}}}[{t.window}]))) > {slo:g}",
            "for": t.hold,
            "labels": {"severity": "page", "project": project, "view": view.name},
            "annotations": {
                "summary": f"{view.name}: events take longer than {slo:g} s to be visible online (p99)",
                "description": "Freshness p99 over {{ $value | humanizeDuration }}: check processor lag and CPU "
                               "(featurestore status), then add processors (up to one per partition).",
            },
        })
    records, dead = metrics.RECORDS._name, metrics.DEAD_LETTERS._name
    values, repairs = metrics.VALUES._name, metrics.ONLINE_REPAIRS._name
    rollbacks = metrics.ROLLBACKS._name
    rules += [
        {
            "alert": "FeatureProcessorLagging",
            "expr": f"sum by (topic) ({metrics.CONSUMER_LAG._name}) > {t.max_lag}",
            "for": t.hold,
            "labels": {"severity": "page", "project": project},
            "annotations": {"summary": "{{ $labels.topic }}: processors are {{ $value }} records behind",
                            "description": "Run more processors (up to one per partition) or look for retries in their log."},
        },
        {
            "alert": "FeatureDeadLetterRateHigh",
            "expr": f"sum by (topic) (rate({dead}_total[{t.window}])) / clamp_min(sum by (topic) "
                    f"(rate({records}_total[{t.window}])), 1e-9) > {t.max_dead_letter_rate:g}",
            "for": t.hold,
            "labels": {"severity": "warning", "project": project},
            "annotations": {"summary": "{{ $labels.topic }}: {{ $value | humanizePercentage }} of records dead-lettered",
                            "description": "Read the reasons in the headers of <topic>.dlq: a producer sends events "
                                           "the event model refuses."},
        },
        {
            "alert": "FeatureValuesMissing",
            "expr": f"sum by (view) (rate({values}_total{{status!=\"present\"}}[{t.window}])) / clamp_min(sum by (view) "
                    f"(rate({values}_total[{t.window}])), 1e-9) > {t.max_missing_rate:g}",
            "for": t.hold,
            "labels": {"severity": "warning", "project": project},
            "annotations": {"summary": "{{ $labels.view }}: {{ $value | humanizePercentage }} of values served are missing",
                            "description": "Entities without events, expired or stale values: is the view fed and fresh?"},
        },
        {
            "alert": "FeatureDrifted",
            "expr": f'featurestore_feature_drift{{measure="psi"}} > {t.max_psi:g}',
            "for": t.hold,
            "labels": {"severity": "warning", "project": project},
            "annotations": {"summary": "{{ $labels.view }}:{{ $labels.feature }} drifted from {{ $labels.reference }} "
                                       "(PSI {{ $value }})",
                            "description": "From `featurestore monitor --prometheus-file`: compare the distributions in the "
                                           "console (/ui) and retrain or fix the producer."},
        },
        {
            "alert": "FeatureOnlineStoreRepaired",
            "expr": f"increase({repairs}_total[15m]) > 0",
            "labels": {"severity": "warning", "project": project},
            "annotations": {"summary": "{{ $labels.view }}: Redis had lost applied events; a processor repaired them",
                            "description": "Nothing to run (docs/when-things-break.md); find out why Redis lost writes."},
        },
        {
            "alert": "FeatureRolloutRolledBack",
            "expr": f"increase({rollbacks}_total[15m]) > 0",
            "labels": {"severity": "warning", "project": project},
            "annotations": {"summary": "{{ $labels.service }}: a {{ $labels.metric }} guard moved the rollout back to its control",
                            "description": "featurestore registry list shows the version and why."},
        },
    ]
    return {"groups": [{"name": f"featurestore-{project}", "rules": rules}]}


def alert_rules_yaml(plan: Plan, project: str, t: Thresholds = Thresholds()) -> str:
    """The rules file as YAML."""
    return str(yaml.safe_dump(alert_rules(plan, project, t), sort_keys=False, width=200))
