"""Request and answer bodies of the feature server's HTTP API (they make its OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictStr

from featurestore.plan import Plan
from featurestore.plan.names import FeatureRef, Name

#: Instants are epoch milliseconds between 1970 and the year 9999.
EpochMs = Annotated[int, Field(strict=True, ge=0, le=253_402_300_799_999)]
#: A 64-bit integer (JSON numbers beyond it are refused, not wrapped).
Int64 = Annotated[int, Field(strict=True, ge=-(2**63), le=2**63 - 1)]
#: A join key value.
KeyValue = Int64 | StrictStr
#: A value of an entity-frame column: join keys, timestamps (ISO 8601 or epoch ms), labels.
CellValue = Int64 | StrictFloat | StrictStr | StrictBool | None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OnlineRequest(_Body):
    features: list[FeatureRef] | None = Field(None, description='"view:feature" references; or give `service`.')
    service: Name | None = Field(None, description="A feature service name instead of `features`.")
    entities: dict[Name, list[KeyValue]] = Field(description="Join key columns, one value per entity: {'user_id': [1, 2]}.")
    full_feature_names: bool = Field(False, description="Name results `view__feature`.")
    at_ms: EpochMs | None = Field(None, description="Evaluate windows and TTL at this instant (epoch ms) instead of now.")
    max_staleness_ms: EpochMs | None = Field(
        None, description="Values whose newest event is older come back as null with status `stale`."
    )
    request_data: dict[Name, CellValue | list[CellValue]] | None = Field(
        None, description="Fields of request sources for request-time features: one value for every entity, or a list "
        "with one per entity: {'amount': [12.5, 80.0]}.")


class FeatureColumn(BaseModel):
    values: list[Any]
    statuses: list[Literal["present", "null", "not_found", "expired", "stale", "error"]]
    event_time_ms: list[int | None] = Field(description="Newest event applied to the entity in the feature's view.")
    staleness_ms: list[int | None] = Field(description="read_at_ms minus event_time_ms.")
    details: list[str | None] | None = Field(None, description="With any `error` status: why, per value.")


class OnlineAnswer(BaseModel):
    read_at_ms: int
    entities: dict[str, list[Any]]
    features: dict[str, FeatureColumn]
    variants: list[str] | None = Field(None, description="For a rollout service: the variant that served each row.")


class HistoricalRequest(_Body):
    features: list[FeatureRef] | None = None
    service: Name | None = None
    entities: dict[Name, list[CellValue]] = Field(
        description="Entity rows as columns: join keys and the timestamp column (ISO 8601 strings or epoch ms)."
    )
    timestamp_column: Name = "event_timestamp"
    mode: Literal["corrected", "as_served"] = "corrected"
    full_feature_names: bool = False


class HistoricalAnswer(BaseModel):
    columns: dict[str, list[Any]]


class ApplyRequest(_Body):
    plan: Plan = Field(description="A compiled plan (`featurestore plan --json`); it may name only code the applied plan names.")
    note: str = Field("", max_length=2000)
    in_place: bool = Field(False, description="Accept views that compute their values differently without a new "
                                              "version (refused otherwise, like `featurestore apply`).")


class ApplyAnswer(BaseModel):
    version: int | None = Field(description="The new registry version; null if the plan was already applied.")
    changes: list[str]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorAnswer(BaseModel):
    error: ErrorBody
