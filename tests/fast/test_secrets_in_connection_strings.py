"""Connection-string secrets without a database: every way a password can sit in a URL or a libpq keyword string is
split off, a string that cannot be read safely is refused naming where it came from and echoing none of it, and
text that may echo a URL is masked."""

from __future__ import annotations

import random

import pytest

from rollbook.outcomes import ExitCode
from rollbook.redaction.connection_secrets import (
    _MASKED,
    _TEXT_KEYWORD,
    _TEXT_USERINFO,
    UnreadableConnectionString,
    mask_secrets_in_text,
    secret_leaks,
    secrets_in_text,
    split_connection_string,
)


@pytest.mark.parametrize(("text", "kind", "shareable", "secrets"), [
    ("postgresql+psycopg://app:s3cr%40t@db:5432/app?sslmode=require", "url",
     "postgresql+psycopg://app@db:5432/app?sslmode=require", ("s3cr@t",)),
    ("postgresql://app@db/app?password=hunter22&sslmode=require", "url", "postgresql://app@db/app?sslmode=require",
     ("hunter22",)),
    ("postgresql://app@db/app?sslpassword=keypass", "url", "postgresql://app@db/app", ("keypass",)),
    ("host=db dbname=app user=app password='pa ss'", "keywords", "user=app dbname=app host=db", ("pa ss",)),
    ("postgresql://app@db/app", "url", "postgresql://app@db/app", ()),
    ("not a connection string", "other", "not a connection string", ()),
])
def test_secrets_are_split_from_what_may_be_shown(text: str, kind: str, shareable: str, secrets: tuple[str, ...]) -> None:
    connection = split_connection_string(text, source="--database-url")

    assert (connection.kind, connection.without_secrets, connection.secrets) == (kind, shareable, secrets)
    assert all(secret not in repr(connection) for secret in secrets)


@pytest.mark.parametrize(("text", "starts"), [
    ("postgresql://app:p@ss@db/app",
     "The database URL in DATABASE_URL could not be read: it holds more than one '@' before its query"),
    ("postgresql://app:first1@db/app?password=second2",
     "The database URL in DATABASE_URL gives a password twice (before the '@' and as ?password=)"),
    ("host=db password='unterminated",
     "The connection string in DATABASE_URL could not be read as a URL (postgresql+psycopg://USER@HOST/DATABASE)"),
])
def test_an_unreadable_string_is_refused_naming_its_source_and_echoing_nothing(text: str, starts: str) -> None:
    with pytest.raises(UnreadableConnectionString) as raised:
        split_connection_string(text, source="DATABASE_URL")

    message = str(raised.value)
    assert message.startswith(starts)
    assert message.endswith("Nothing was changed.")
    assert raised.value.exit_code == ExitCode.BAD_INPUT
    for part in ("p@ss", "ss@db", "first1", "second2", "unterminated"):
        assert part not in message


def test_a_password_with_an_unencoded_at_is_found_however_a_reader_split_it() -> None:
    found = secrets_in_text("could not connect to postgresql://app:p@ss@db/app")

    assert {"p", "p@ss"} <= found


def test_secrets_are_found_in_any_text() -> None:
    assert secrets_in_text("connecting to postgresql://app:hunter22@db/app failed") == {"hunter22"}
    assert secrets_in_text("dsn: host=db password=hunter33 user=app") >= {"hunter33"}
    assert secrets_in_text("postgresql://app:***@db/app") == set()


def test_text_that_echoes_a_connection_string_is_masked() -> None:
    masked = mask_secrets_in_text("url postgresql://app:hunter22@db/app and password=hunter33 host=x")

    assert masked == "url postgresql://app:***@db/app and password=*** host=x"


def test_a_leak_is_described_without_revealing_it() -> None:
    assert secret_leaks("postgresql://app:hunter22@db/app") == [
        "a connection-string password of 8 characters at character 17"]
    assert secret_leaks("postgresql://app:***@db/app password=***") == []


def test_the_site_guard_finds_every_secret_the_patterns_find_anywhere_in_a_text() -> None:
    """The guard tries its patterns only next to '://' and 'password=' (fast enough for an archive of years): on
    texts built from the pieces connection strings are made of, it finds exactly what scanning every character
    with the same patterns finds."""
    pieces = ["a", "s", "l", "ssl", "password=", "sslpassword=", "://", "postgresql", "x:", "@", "/", " ", "'", '"',
              "-", "1", "+", ".", "&", "=", "p:w@", "\\", ",", "<", "`", ":", "***", "\n"]
    chosen = random.Random(16)
    for _ in range(20_000):
        text = "".join(chosen.choice(pieces) for _ in range(chosen.randint(0, 24)))
        everywhere = [f"at character {m.start('secret')}" for pattern in (_TEXT_USERINFO, _TEXT_KEYWORD)
                      for m in pattern.finditer(text) if m["secret"] not in _MASKED and set(m["secret"]) != {"*"}]
        assert [leak.rpartition(" of ")[2].split(" characters ")[1] for leak in secret_leaks(text)] == everywhere, text
