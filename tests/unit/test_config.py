from pathlib import Path

import pytest

from marketpipe.config import Settings, redact_url
from marketpipe.domain import InvalidInputError


def test_defaults():
    settings = Settings.from_env({})
    assert settings.data_dir == Path("data")
    assert settings.lake_dir == Path("data/lake")
    assert settings.db_url == "sqlite:///data/db/marketpipe.db"
    assert settings.sqlite_path == Path("data/db/marketpipe.db")
    assert settings.is_sqlite


def test_environment_then_arguments_take_precedence(tmp_path):
    env = {"MARKETPIPE_DATA_DIR": str(tmp_path), "MARKETPIPE_LOG_LEVEL": "debug"}
    settings = Settings.from_env(env)
    assert settings.data_dir == tmp_path and settings.log_level == "DEBUG"
    assert settings.sqlite_path == tmp_path / "db" / "marketpipe.db"
    override = Settings.from_env(env, data_dir="/other", db_url="postgresql://u:pw@h/db")
    assert override.data_dir == Path("/other") and not override.is_sqlite


def test_absolute_sqlite_url():
    assert Settings.from_env({"MARKETPIPE_DB_URL": "sqlite:////var/x.db"}).sqlite_path == Path("/var/x.db")


@pytest.mark.parametrize("bad", ["mysql://x/y", "sqlite://", "sqlite:///", "nonsense"])
def test_unsupported_urls_are_refused(bad):
    with pytest.raises(InvalidInputError, match="Unsupported database URL"):
        Settings.from_env({"MARKETPIPE_DB_URL": bad})


def test_passwords_never_appear_in_reprs_or_errors():
    url = "postgresql://alice:s3cr3t@db.example:5432/market"
    assert redact_url(url) == "postgresql://alice:***@db.example:5432/market"
    assert "s3cr3t" not in repr(Settings.from_env({"MARKETPIPE_DB_URL": url}))
    with pytest.raises(InvalidInputError) as info:
        Settings.from_env({"MARKETPIPE_DB_URL": "mysql://bob:hunter2@h/db"})
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:S3cr/t@h:1/db", "postgresql://u:***@h:1/db"),
        ("postgresql://u:S3cr#t@h:1/db", "postgresql://u:***@h:1/db"),
        ("postgresql://u:S3cr?t@h:1/db", "postgresql://u:***@h:1/db"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db?password=x&sslmode=require", "postgresql://u@h/db?password=***&sslmode=***"),
        ("postgresql://host/db?x=a@b", "postgresql://host/db?x=***"),
        ("postgresql://postgres@127.0.0.1:5432/x", "postgresql://postgres@127.0.0.1:5432/x"),
    ],
)
def test_passwords_with_characters_url_parsers_misread_are_still_hidden(url, shown):
    assert redact_url(url) == shown
