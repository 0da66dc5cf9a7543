"""The command line's noise filter hides the named third-party notices and nothing else."""

import logging
import os
import warnings

import pytest

from pipeline import quiet

pytestmark = pytest.mark.unit

STREAM_NOTICE = "Stream feature views are experimental features in alpha development."


@pytest.fixture
def shown(monkeypatch):
    """Warnings that would be displayed after :func:`quiet.quiet_third_parties`, starting
    from "show everything" (the filters and logger levels are restored afterwards)."""
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    levels = {name: logging.getLogger(name).level for name in quiet.CHATTY_LOGGERS}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet.quiet_third_parties()
        yield caught
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _warn(message: str, category: type[Warning], module: str) -> None:
    warnings.warn_explicit(message, category, f"{module.replace('.', '/')}.py", 1, module=module)


def test_the_named_notices_are_hidden(shown):
    _warn(STREAM_NOTICE, RuntimeWarning, "feast.stream_feature_view")
    _warn(
        "On demand feature view is an experimental feature.", RuntimeWarning, "feast.feature_store"
    )
    _warn(
        "The noload loader strategy is deprecated",
        DeprecationWarning,
        "mlflow.store.tracking.sqlalchemy_store",
    )
    assert [str(w.message) for w in shown] == []


@pytest.mark.parametrize(
    ("message", "category", "module"),
    [
        (STREAM_NOTICE, RuntimeWarning, "fitrec_module"),  # same text, another module
        (STREAM_NOTICE, UserWarning, "feast.stream_feature_view"),  # another category
        ("overflow in exp", RuntimeWarning, "feast.stream_feature_view"),  # another message
        ("divide by zero", RuntimeWarning, "feast.feature_store"),
        ("old API", DeprecationWarning, "mlflow.tracking.client"),
        ("old API", DeprecationWarning, "pipeline.model.training"),
    ],
)
def test_other_warnings_still_show(shown, message, category, module):
    _warn(message, category, module)
    assert [(str(w.message), w.category) for w in shown] == [(message, category)]


def test_chatty_loggers_keep_their_warnings_and_errors(shown, caplog):
    logger = logging.getLogger("mlflow.store.db.utils")
    with caplog.at_level(logging.NOTSET):
        logger.info("Creating initial MLflow database tables...")
        logger.warning("schema is old")
        logger.error("cannot open the database")
    assert [r.getMessage() for r in caplog.records] == ["schema is old", "cannot open the database"]
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"


def test_native_info_lines_are_dropped_and_the_rest_kept(capfd):
    with quiet.without_native_info():
        os.write(
            2,
            b"WARNING: All log messages before absl::InitializeLog() is called are "
            b"written to STDERR\n",
        )
        os.write(2, b"I0000 00:00:1796168398.595676   10377 port.cc:153] oneDNN custom ops\n")
        os.write(2, b"E0000 00:00:1796168432.585220   10377 cuda_platform.cc:52] cuInit failed\n")
        os.write(2, b"Traceback (most recent call last): boom\n")
    err = capfd.readouterr().err
    assert "oneDNN" not in err and "absl::InitializeLog" not in err
    assert "cuInit failed" in err and "Traceback (most recent call last): boom" in err


def test_what_is_written_while_held_comes_back_on_an_exception(capfd):
    with pytest.raises(ImportError), quiet.without_native_info():
        os.write(2, b"loading the C++ library failed\n")
        raise ImportError("no such library")
    assert "loading the C++ library failed" in capfd.readouterr().err
