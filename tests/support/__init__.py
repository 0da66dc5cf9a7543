"""Helpers that start real servers (redis-server single and cluster, PostgreSQL) on free ports,
shared by the tests and the benchmarks; nothing in the product imports them."""
