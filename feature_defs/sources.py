"""Card payment events, JSON on the `payments` topic."""

from pydantic import AwareDatetime, BaseModel, Field, PositiveFloat

from featurestore import KafkaSource


class Payment(BaseModel):
    """One card payment as the payment gateway publishes it."""

    payment_id: str
    user_id: int
    merchant_id: str
    amount: PositiveFloat
    currency: str = Field(min_length=3, max_length=3)
    country: str = Field(min_length=2, max_length=2)
    ts: AwareDatetime


payments = KafkaSource(
    "payments",
    topic="payments",
    schema=Payment,
    timestamp_field="ts",
    description="Card payments from the gateway, keyed by user_id.",
)
