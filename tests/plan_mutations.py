"""Hostile edits of a plan given as JSON, shared by the plan-check and the /v1/apply tests."""

from __future__ import annotations

from typing import Any


def string_slots(doc: Any) -> list[tuple[Any, Any]]:
    """(container, key) of every string in a JSON document, so a test can replace any one."""
    slots: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for k, v in items:
            if isinstance(v, str):
                slots.append((node, k))
            walk(v)

    walk(doc)
    return slots
