"""Request-time features: computed when a model asks, from the payment being authorised."""

from pydantic import BaseModel, PositiveFloat

from featurestore import RequestFeature, RequestFeatureView, RequestSource


class PaymentRequest(BaseModel):
    """What the payment service sends with each fraud check: the payment being authorised."""

    amount: PositiveFloat


payment_request = RequestSource("payment_request", schema=PaymentRequest,
                                description="The payment being authorised, sent with the read.")


def amount_vs_1d_mean(amount: float, amount_mean_1d: float | None) -> float | None:
    """How many times the card holder's mean payment of the last day this payment is
    (None without a payment that day)."""
    if not amount_mean_1d:
        return None
    return round(amount / amount_mean_1d, 6)


payment_checks = RequestFeatureView(
    "payment_checks",
    request=payment_request,
    features=[RequestFeature("amount_vs_1d_mean", amount_vs_1d_mean, inputs=["user_payments:amount_mean_1d"])],
    owner="risk-team@example.com",
    description="Features of the payment being authorised against the card holder's history.",
)
