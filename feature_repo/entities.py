"""Entities: who and what features are keyed by."""

from feast import Entity, ValueType

from pipeline.features.declarations import CUSTOMER_ENTITY, ITEM_ENTITY, SESSION_ENTITY

customer = Entity(
    name="customer",
    join_keys=[CUSTOMER_ENTITY],
    value_type=ValueType.STRING,
    description="A customer, by pseudonym (HMAC of the retailer's id); never the raw id.",
)
item = Entity(
    name="item",
    join_keys=[ITEM_ENTITY],
    value_type=ValueType.STRING,
    description="A catalogue item.",
)
session = Entity(
    name="session",
    join_keys=[SESSION_ENTITY],
    value_type=ValueType.STRING,
    description="A browsing session (may be anonymous).",
)
