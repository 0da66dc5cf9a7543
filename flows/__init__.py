"""Prefect 3 flows: orchestration only. Each task is a few lines around one pipeline call."""
