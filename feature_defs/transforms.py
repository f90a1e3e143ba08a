"""Row-level transformations: pure functions of one event, referenced by import path."""

from sources import Payment

# Fixed demo rates; a real repo would join a rates feed.
EUR_PER_UNIT = {"EUR": 1.0, "USD": 0.92, "GBP": 1.17, "CHF": 1.05}


def amount_eur(event: Payment) -> float:
    """The payment amount converted to euros."""
    return round(event.amount * EUR_PER_UNIT.get(event.currency, 1.0), 2)


def is_large(event: Payment) -> bool:
    """Whether the payment is above 1,000 in its own currency."""
    return event.amount > 1000
