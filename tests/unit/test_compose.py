"""docker-compose.yml stays consistent with the product (CI also runs `docker-compose config`)."""

from __future__ import annotations

from pathlib import Path

import yaml

from featurestore.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_compose_has_the_production_stack_with_health_checks() -> None:
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = spec["services"]
    assert {"kafka", "redis", "processor"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    for name in ("kafka", "redis", "processor"):
        assert "healthcheck" in services[name], name
    deps = services["processor"]["depends_on"]
    assert deps["kafka"]["condition"] == deps["redis"]["condition"] == "service_healthy"
    assert "featurestore run" in " ".join(services["processor"]["command"])


def test_compose_environment_names_real_settings() -> None:
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = spec["services"]["processor"]["environment"]
    known = {f"FEATURESTORE_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= known, set(env) - known
