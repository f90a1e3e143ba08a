"""Entities of the payments domain."""

from featurestore import Entity

user = Entity("user", join_keys=["user_id"], description="A card holder.")
merchant = Entity("merchant", join_keys=["merchant_id"], description="A shop accepting card payments.")
