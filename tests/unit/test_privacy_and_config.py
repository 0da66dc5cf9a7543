import polars as pl
import pytest
from pydantic import ValidationError

from pipeline.config import Settings
from pipeline.features.online.connection import FEAST_STORE_TYPE
from pipeline.features.store import config_document
from pipeline.privacy import pseudonymise, pseudonymise_column


def test_pseudonyms_are_stable_keyed_and_null_safe():
    assert pseudonymise("C1", "k") == pseudonymise("C1", "k")
    assert pseudonymise("C1", "k") != pseudonymise("C1", "other")
    assert "C1" not in pseudonymise("C1", "k")
    frame = pl.DataFrame({"customer_id": ["C1", None, "C1"], "x": [1, 2, 3]})
    out = pseudonymise_column(frame, "customer_id", "k")
    assert out["customer_id"].to_list() == [pseudonymise("C1", "k"), None, pseudonymise("C1", "k")]
    assert out["x"].to_list() == [1, 2, 3]


def test_settings_pick_the_online_store(tmp_path, monkeypatch):
    monkeypatch.setenv("FITREC_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("FITREC_REDIS_URL", raising=False)
    sqlite = Settings()
    assert config_document(sqlite)["online_store"] == {
        "type": "sqlite",
        "path": str(tmp_path / "feast" / "online_store.db"),
    }
    assert sqlite.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("FITREC_REDIS_URL", "redis://:p%2Cw@localhost:7000/0")
    online = config_document(Settings())["online_store"]
    assert online["type"] == FEAST_STORE_TYPE
    assert online["connection_string"] == "redis://:p%2Cw@localhost:7000/0"
    monkeypatch.setenv("FITREC_REDIS_URL", "http://nope")
    with pytest.raises(ValidationError, match="FITREC_REDIS_URL"):
        Settings()
