"""The trust benchmark's ingest drill, held in CI: every named hostile mutation of a generated
day is ingested without an exception, and its counts reconcile with the files (counted
without ingest) and with what was written, re-runs byte-identical."""

import pytest

from tests.support.drills import ingest_drill, ingest_mutations

pytestmark = pytest.mark.unit


def test_every_hostile_case_is_ingested_and_reconciled(tmp_path):
    result = ingest_drill(tmp_path)
    assert result.cases == len(ingest_mutations()) >= 40
    assert result.failures == []
    assert (result.crashes, result.reconciled) == (0, result.cases)
