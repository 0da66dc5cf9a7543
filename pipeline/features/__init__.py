"""Curated tables to features: declarations (names, types, TTLs, defaults), the Polars
builders, live session state, garment-fit matching, the Feast glue and the Redis online store."""
