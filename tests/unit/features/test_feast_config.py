"""feature_repo/feature_store.yaml, loaded by stock Feast, resolves what fitrec resolves.

Feast's own loader (``FeatureStore(repo_path=...)``, the one its CLI uses) reads the committed
file; the registry and the online store must come out where and what
:func:`pipeline.features.store.repo_config` says for the same environment, from variables, a
``.env`` in the working directory, and with nothing (and no password) written elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from feast import FeatureStore
from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
from feast.repo_config import FeastConfigError

from pipeline.config import FEATURE_REPO, Settings
from pipeline.features.online.feast_store import RedisURLOnlineStoreConfig
from pipeline.features.store import (
    ONLINE_STORE_TYPE,
    FitrecOnlineStoreConfig,
    environment_settings,
    repo_config,
)

PASSWORD = "s3,cr@t%,x=y:z/"
URL = f"redis://:{quote(PASSWORD, safe='')}@127.0.0.1:6390/2"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No FITREC_* from the caller's environment; the working directory is an empty folder
    (so no stray .env); returns the data dir the tests point FITREC_DATA_DIR at."""
    for name in ("FITREC_DATA_DIR", "FITREC_REDIS_URL", "FITREC_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    data = tmp_path / "data"
    monkeypatch.setenv("FITREC_DATA_DIR", str(data))
    return data


def stock_store() -> FeatureStore:
    """What `cd feature_repo && feast ...` builds: Feast's loader on the committed file."""
    return FeatureStore(repo_path=str(FEATURE_REPO))


def test_sqlite_store_and_registry_live_under_the_data_dir(clean_env: Path) -> None:
    fs = stock_store()
    online = fs.config.online_store
    assert isinstance(online, SqliteOnlineStoreConfig)
    assert online.type == "sqlite"
    assert Path(online.path) == clean_env / "feast" / "online_store.db"
    assert online == repo_config(Settings()).online_store
    fs.list_feature_views()  # reads the registry: Feast created it where fitrec keeps it
    assert (clean_env / "feast" / "registry.db").is_file()
    assert sorted(p.name for p in (clean_env / "feast").iterdir()) == ["registry.db"]


def test_redis_url_with_a_hostile_password_reaches_feast_and_no_file(clean_env: Path, monkeypatch):
    monkeypatch.setenv("FITREC_REDIS_URL", URL)
    fs = stock_store()
    online = fs.config.online_store
    assert isinstance(online, RedisURLOnlineStoreConfig)
    assert online.connection_string == URL
    assert online.redis_type == "redis"
    assert online == repo_config(Settings()).online_store
    fs.list_feature_views()
    written = [p for p in clean_env.rglob("*") if p.is_file()]
    assert written, "the registry was not created"
    for path in written:
        data = path.read_bytes()
        assert PASSWORD.encode() not in data and quote(PASSWORD, safe="").encode() not in data


def test_a_cluster_url_gives_a_cluster_store(clean_env: Path, monkeypatch) -> None:
    url = "redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001"
    monkeypatch.setenv("FITREC_REDIS_URL", url)
    online = stock_store().config.online_store
    assert isinstance(online, RedisURLOnlineStoreConfig)
    assert online.redis_type == "redis_cluster" and online.connection_string == url


def test_dotenv_of_the_working_directory_counts_and_variables_win(clean_env: Path, monkeypatch):
    other = clean_env.parent / "from-dotenv"
    Path(".env").write_text(f"FITREC_REDIS_URL={URL}\nFITREC_DATA_DIR={other}\n")
    settings = environment_settings()
    assert settings.redis_url == URL  # from .env
    assert settings.data_dir == clean_env  # the variable wins over .env
    monkeypatch.delenv("FITREC_DATA_DIR")
    assert environment_settings().data_dir == other
    online = stock_store().config.online_store
    assert isinstance(online, RedisURLOnlineStoreConfig) and online.connection_string == URL


def test_more_fields_of_the_section_go_to_the_resolved_store(clean_env: Path, monkeypatch):
    monkeypatch.setenv("FITREC_REDIS_URL", URL)
    online = FitrecOnlineStoreConfig(type=ONLINE_STORE_TYPE, key_ttl_seconds=3600)
    assert isinstance(online, RedisURLOnlineStoreConfig) and online.key_ttl_seconds == 3600
    monkeypatch.delenv("FITREC_REDIS_URL")
    with pytest.raises(ValueError, match="key_ttl_seconds: Extra inputs are not permitted"):
        FitrecOnlineStoreConfig(type=ONLINE_STORE_TYPE, key_ttl_seconds=3600)  # not SQLite's


def test_a_bad_url_fails_loading_without_showing_the_password(clean_env: Path, monkeypatch):
    monkeypatch.setenv("FITREC_REDIS_URL", f"http://:{PASSWORD}@host:1")
    with pytest.raises(FeastConfigError, match="FITREC_REDIS_URL") as raised:
        stock_store()
    shown = str(raised.getrepr(chain=True))  # what the Feast CLI prints, causes included
    assert "must start with redis://" in shown
    assert PASSWORD not in shown and quote(PASSWORD, safe="") not in shown
