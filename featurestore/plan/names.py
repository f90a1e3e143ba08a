"""What a name may be: the one rule for every name a plan carries.

Names of entities, sources, views, services, features, join keys and event fields are
identifiers: an ASCII letter, then letters, digits or underscores, at most 128 characters.
They become Redis keys, Parquet folder names, DuckDB identifiers and Prometheus labels, so
nothing else may reach them: no quotes, dots, slashes, colons or spaces. Topics follow
Kafka's own rule; code references (`module.path:QualName`) are dotted identifiers.
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
FEATURE_REF_PATTERN = rf"^{_IDENT}:{_IDENT}$"

_NAME = re.compile(NAME_PATTERN)
_TOPIC = re.compile(TOPIC_PATTERN)
_CODE_REF = re.compile(CODE_REF_PATTERN)

#: A name of a plan object, feature, join key or event field.
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
#: A Kafka topic name.
Topic = Annotated[str, StringConstraints(pattern=TOPIC_PATTERN)]
#: `module.path:QualName` of a function or class in the feature repository.
CodeRef = Annotated[str, StringConstraints(pattern=CODE_REF_PATTERN, max_length=512)]
#: `view:feature`.
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
