"""Feature views over card payments: per user and per merchant."""

from datetime import timedelta

from entities import merchant, user
from sources import payments
from transforms import amount_eur, is_large

from featurestore import LIFETIME, Aggregation, FeatureView, Field, Transform

user_payments = FeatureView(
    "user_payments",
    entities=[user],
    source=payments,
    ttl=timedelta(days=7),
    allowed_lateness=timedelta(hours=1),
    owner="risk-team@example.com",
    description="Spending of each card holder.",
    tags={"domain": "payments", "pii": "true"},
    features=[
        Aggregation("amount", "sum", windows=[timedelta(hours=1), timedelta(days=1)]),
        Aggregation("amount", "count", windows=[timedelta(hours=1), timedelta(days=1), LIFETIME]),
        Aggregation("amount", "mean", windows=[timedelta(days=1)]),
        Aggregation("amount", "max", windows=[timedelta(days=1)]),
        Aggregation("amount", "stddev", windows=[timedelta(days=1)]),
        Aggregation("amount_eur", "sum", windows=[timedelta(hours=1), LIFETIME]),
        Aggregation("amount", "count", windows=[timedelta(days=1)], where="is_large", name="large_payments"),
        Aggregation("merchant_id", "count_distinct", windows=[timedelta(days=1)], name="merchants"),
        Aggregation("merchant_id", "last_n", k=3, windows=[timedelta(hours=1)], name="recent_merchants"),
        Aggregation("country", "first", windows=[timedelta(days=1)], name="first_country"),
        Field("merchant_id", name="last_merchant"),
        Field("country", name="last_country"),
        Transform("amount_eur", udf=amount_eur),
        Transform("is_large", udf=is_large),
    ],
)

merchant_payments = FeatureView(
    "merchant_payments",
    entities=[merchant],
    source=payments,
    ttl=timedelta(days=1),
    owner="risk-team@example.com",
    description="Traffic at each merchant.",
    features=[
        Aggregation("amount", "count", windows=[timedelta(minutes=10), timedelta(hours=1)]),
        Aggregation("amount", "sum", windows=[timedelta(hours=1)]),
        Aggregation("amount", "min", windows=[timedelta(hours=1)]),
        Aggregation("amount", "last", windows=[timedelta(hours=1)]),
    ],
)
