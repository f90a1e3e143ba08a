"""Fixtures of the integration tests (the services themselves: tests/conftest.py)."""

from tests.integration.server_harness import deployment

__all__ = ["deployment"]
