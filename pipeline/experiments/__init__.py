"""Online experiments: A/B tests and interleaving of models and rule sets.

The loop, in the order data flows through it:

1. :mod:`.config`: an experiment is declared in TOML or YAML and validated at load.
2. :mod:`.assignment`: serving puts each unit (pseudonymised customer, or session) in a
   variant by a hash of the experiment's salt and the unit: sticky across workers and restarts.
3. Serving logs an exposure per answer and ``POST /events`` logs outcomes (clicks, carts,
   purchases, returns with their reason) to the durable event log the nightly ingest reads.
4. :mod:`.metrics`: per-unit and per-variant metrics from the curated exposures and outcomes.
5. :mod:`.analysis`: differences with intervals, CUPED, always-valid sequential inference,
   the sample-ratio-mismatch check and multiple-metric correction; :mod:`.interleaving` for
   team-draft interleaving; :mod:`.simulator` proves the statistics on simulated shoppers.
"""
