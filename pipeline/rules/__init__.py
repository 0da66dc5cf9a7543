"""Retailer business rules: the schema and its loading, and the rules compiled against one
catalogue that serving applies on every page view."""
