import logging

import polars as pl
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import ValidationError

from pipeline.config import DEV_PSEUDONYM_KEY, Settings, get_settings
from pipeline.features.store import config_document
from pipeline.privacy import key_id, pseudonymise, pseudonymise_column, translation
from pipeline.redis_url import FEAST_STORE_TYPE


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


# --- the pseudonym key: production refuses the public default, elsewhere a warning --------


def _clean_key_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FITREC_DATA_DIR", str(tmp_path))
    for name in ("FITREC_PSEUDONYM_KEY", "FITREC_PSEUDONYM_PREVIOUS_KEYS", "FITREC_PROFILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("key", [None, "", DEV_PSEUDONYM_KEY])
def test_production_profile_refuses_a_missing_or_public_key(monkeypatch, tmp_path, key):
    _clean_key_env(monkeypatch, tmp_path)
    monkeypatch.setenv("FITREC_PROFILE", "production")
    if key is not None:
        monkeypatch.setenv("FITREC_PSEUDONYM_KEY", key)
    get_settings.cache_clear()
    with pytest.raises(ValidationError, match="FITREC_PSEUDONYM_KEY must be set"):
        get_settings()
    get_settings.cache_clear()


def test_production_profile_starts_with_a_real_key(monkeypatch, tmp_path):
    _clean_key_env(monkeypatch, tmp_path)
    monkeypatch.setenv("FITREC_PROFILE", "production")
    monkeypatch.setenv("FITREC_PSEUDONYM_KEY", "a-real-secret")
    settings = Settings()
    assert not settings.uses_dev_pseudonym_key
    assert settings.pseudonym_keys == ["a-real-secret"]


def test_serving_refuses_to_start_in_production_with_the_default_key(monkeypatch, tmp_path):
    _clean_key_env(monkeypatch, tmp_path)
    monkeypatch.setenv("FITREC_PROFILE", "production")
    get_settings.cache_clear()
    from serving.app import create_app

    with pytest.raises(ValidationError, match="FITREC_PSEUDONYM_KEY"):
        create_app()
    get_settings.cache_clear()


def test_the_flows_command_line_refuses_it_too(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    _clean_key_env(monkeypatch, tmp_path)
    monkeypatch.setenv("FITREC_PROFILE", "production")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["run", "ingest", "--date", "2024-01-01"])
    assert result.exit_code != 0
    assert "FITREC_PSEUDONYM_KEY must be set" in str(result.exception)
    get_settings.cache_clear()


def test_the_default_key_is_warned_about_once(monkeypatch, tmp_path, caplog):
    import pipeline.config as config

    _clean_key_env(monkeypatch, tmp_path)
    monkeypatch.setattr(config, "_warned_dev_key", False)
    with caplog.at_level(logging.WARNING, logger="pipeline.config"):
        for _ in range(3):
            get_settings.cache_clear()
            assert get_settings().uses_dev_pseudonym_key
    warnings = [r for r in caplog.records if "FITREC_PSEUDONYM_KEY" in r.getMessage()]
    assert len(warnings) == 1
    caplog.clear()
    monkeypatch.setattr(config, "_warned_dev_key", False)
    monkeypatch.setenv("FITREC_PSEUDONYM_KEY", "secret")
    with caplog.at_level(logging.WARNING, logger="pipeline.config"):
        get_settings.cache_clear()
        get_settings()
    assert not [r for r in caplog.records if "FITREC_PSEUDONYM_KEY" in r.getMessage()]
    get_settings.cache_clear()


KEYS = st.text(  # environment variables hold no NUL
    alphabet=st.characters(blacklist_characters=",\x00", codec="utf-8"), min_size=1
)


@given(current=KEYS, previous=st.lists(KEYS, max_size=4))
@hsettings(max_examples=50, deadline=None)
def test_previous_keys_are_a_comma_separated_list_after_the_current_one(current, previous):
    import os

    previous = [p.strip() for p in previous if p.strip()]
    env = {"FITREC_PSEUDONYM_KEY": current, "FITREC_PSEUDONYM_PREVIOUS_KEYS": ",".join(previous)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        keys = Settings().pseudonym_keys
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert keys[0] == current
    assert keys == list(dict.fromkeys([current, *previous]))


@given(ids=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=30), old=KEYS, new=KEYS)
@hsettings(max_examples=50, deadline=None)
def test_rotation_translation_maps_old_pseudonyms_to_new_ones(ids, old, new):
    mapping = translation(ids, old, new)
    for customer in ids:
        assert mapping[pseudonymise(customer, old)] == pseudonymise(customer, new)
    assert len(key_id(old)) == 8 and int(key_id(old), 16) >= 0
    if old != new:
        assert key_id(old) != key_id(new)  # 32 bits: a collision here would be a bug


def test_a_bad_redis_url_does_not_print_its_password(monkeypatch):
    from pydantic import ValidationError

    from pipeline.config import Settings

    for url in ("redis://:topsecret-9@h:1?ssl_cert_reqs=bogus", "redis://:topsecret-9@h:notaport"):
        monkeypatch.setenv("FITREC_REDIS_URL", url)
        with pytest.raises(ValidationError) as error:
            Settings()
        assert "topsecret-9" not in str(error.value)
        assert "FITREC_REDIS_URL" in str(error.value)


def test_the_promotion_rule_and_metric_are_checked(monkeypatch):
    assert Settings().promotion_rule == "superior"
    monkeypatch.setenv("FITREC_PROMOTION_RULE", " Non-Inferior ")
    assert Settings().promotion_rule == "non_inferior"
    monkeypatch.setenv("FITREC_PROMOTION_RULE", "lenient")
    with pytest.raises(ValidationError, match="FITREC_PROMOTION_RULE: 'lenient'"):
        Settings()
    monkeypatch.delenv("FITREC_PROMOTION_RULE")
    monkeypatch.setenv("FITREC_PROMOTION_METRIC", "recall@20")
    with pytest.raises(ValidationError, match="FITREC_PROMOTION_METRIC: 'recall@20'"):
        Settings()
    monkeypatch.setenv("FITREC_PROMOTION_METRIC", "map_at_12")
    assert Settings().promotion_metric == "map_at_12"
