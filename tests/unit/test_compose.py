"""docker-compose.yml stays consistent with the product (CI also runs `docker-compose config`)."""

from __future__ import annotations

from pathlib import Path

import yaml

from featurestore.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_compose_has_the_production_stack_with_health_checks() -> None:
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = spec["services"]
    assert {"kafka", "redis", "processor", "server"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    for name in ("kafka", "redis", "processor", "server"):
        assert "healthcheck" in services[name], name
    deps = services["processor"]["depends_on"]
    assert deps["kafka"]["condition"] == deps["redis"]["condition"] == "service_healthy"
    assert "featurestore run" in " ".join(services["processor"]["command"])
    assert "featurestore serve" in " ".join(services["server"]["command"])


def test_compose_environment_names_real_settings() -> None:
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    known = {f"FEATURESTORE_{name.upper()}" for name in Settings.model_fields}
    for service in ("processor", "server"):
        env = spec["services"][service]["environment"]
        assert set(env) <= known, set(env) - known
