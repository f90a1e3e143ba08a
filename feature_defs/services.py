"""Feature services: the bundles of features each model reads."""

from views import merchant_payments

from featurestore import FeatureService

fraud_model_v1 = FeatureService(
    "fraud_model_v1",
    features=[
        "user_payments:amount_sum_1h",
        "user_payments:amount_count_1h",
        "user_payments:amount_sum_1d",
        "user_payments:amount_count_1d",
        "user_payments:amount_mean_1d",
        "user_payments:amount_max_1d",
        "user_payments:amount_stddev_1d",
        "user_payments:large_payments_1d",
        "user_payments:merchants_1d",
        "user_payments:last_country",
    ],
    owner="risk-team@example.com",
    description="Inputs of the card fraud model: ten spending features of the card holder.",
)

merchant_monitoring = FeatureService(
    "merchant_monitoring",
    features=[merchant_payments],
    owner="merchant-ops@example.com",
    description="Every merchant feature, for the merchant monitoring dashboard.",
)
