"""Feast's Redis online store, fast: value encoding, the connection (one URL, redis-py), the
writer (dedup, checkpoints), materialisation of a view, and the serving reader."""
