"""What a name may be: the one rule for every name a plan carries.

Names of entities, sources, views, services, features, join keys and event fields are
identifiers: an ASCII letter, then letters, digits or underscores, at most 128 characters.
They become Redis keys, Parquet folder names, DuckDB identifiers and Prometheus labels, so
nothing else may reach them: no quotes, dots, slashes, colons or spaces. Topics follow
Kafka's own rule; code references (`module.path:QualName`) are dotted identifiers.

A view's id in a plan is its name for version 1 and `name@N` for version N >= 2 (so stores
written before views had versions stay valid); feature references may pin a version
(`view@2:feature`, `view@1:feature`) or name the view alone (its serving version).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import StringConstraints

NAME_RULE = "an ASCII letter, then letters, digits or underscores (at most 128 characters)"
_IDENT = r"[A-Za-z][A-Za-z0-9_]{0,127}"
NAME_PATTERN = rf"^{_IDENT}$"
TOPIC_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
CODE_REF_PATTERN = rf"^{_DOTTED}:{_DOTTED}$"
_VERSION = r"[1-9][0-9]{0,5}"
VIEW_ID_PATTERN = rf"^{_IDENT}(?:@(?:[2-9]|[1-9][0-9]{{1,5}}))?$"
FEATURE_REF_PATTERN = rf"^{_IDENT}(?:@{_VERSION})?:{_IDENT}$"

_NAME = re.compile(NAME_PATTERN)
_TOPIC = re.compile(TOPIC_PATTERN)
_CODE_REF = re.compile(CODE_REF_PATTERN)
_VIEW_ID = re.compile(VIEW_ID_PATTERN)
_VIEW_REF = re.compile(rf"^({_IDENT})(?:@({_VERSION}))?$")

#: A name of a plan object, feature, join key or event field.
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
#: A Kafka topic name.
Topic = Annotated[str, StringConstraints(pattern=TOPIC_PATTERN)]
#: `module.path:QualName` of a function or class in the feature repository.
CodeRef = Annotated[str, StringConstraints(pattern=CODE_REF_PATTERN, max_length=512)]
#: A view's id in a plan: `name` (version 1) or `name@N` (version N >= 2).
ViewId = Annotated[str, StringConstraints(pattern=VIEW_ID_PATTERN)]
#: `view:feature` or `view@N:feature`.
FeatureRef = Annotated[str, StringConstraints(pattern=FEATURE_REF_PATTERN)]


def is_name(value: object) -> bool:
    """Whether `value` is a valid name (see the module docstring)."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def is_topic(value: object) -> bool:
    """Whether `value` is a valid Kafka topic name."""
    return isinstance(value, str) and _TOPIC.fullmatch(value) is not None


def is_code_ref(value: object) -> bool:
    """Whether `value` looks like `module.path:QualName`."""
    return isinstance(value, str) and len(value) <= 512 and _CODE_REF.fullmatch(value) is not None


def is_view_id(value: object) -> bool:
    """Whether `value` is a view id (`name`, or `name@N` with N >= 2)."""
    return isinstance(value, str) and _VIEW_ID.fullmatch(value) is not None


def view_id(name: str, version: int) -> str:
    """The id of version `version` of view `name`: the name itself for version 1."""
    return name if version == 1 else f"{name}@{version}"


def parse_view_ref(text: str) -> tuple[str, int | None] | None:
    """(name, version) of `name` or `name@N` (version None when not pinned); None if malformed."""
    m = _VIEW_REF.fullmatch(text) if isinstance(text, str) else None
    return None if m is None else (m.group(1), int(m.group(2)) if m.group(2) else None)
