"""Serving: load the champion once, fetch online features, score, apply rules, return top-k."""

from serving.recommender import NoChampionError, Recommender
from serving.schemas import Recommendation, RecommendationRequest, ScoredItem

__all__ = [
    "NoChampionError",
    "Recommendation",
    "RecommendationRequest",
    "Recommender",
    "ScoredItem",
]
