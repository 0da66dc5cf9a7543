"""Raw drops to curated tables: contracts, units, the generator, public-data adapters, ingest
(validation and quarantine) and the readers of the curated tables it writes."""
