"""Secrets in PostgreSQL connection strings, read in one place: every form libpq and SQLAlchemy accept.

A password reaches a connection string as URL userinfo (`postgresql://app:SECRET@db/app`), as a query
parameter (`?password=SECRET`, `?sslpassword=SECRET`), or as a libpq keyword
(`host=db password='SECRET' sslpassword=SECRET`). Whatever shows, records, passes on or guards a
connection string asks this module for its secrets: the database target of the CLI and the runbooks,
the runbooks' parameter check, `rollbook run` (which moves the password into PGPASSWORD), the records'
redaction and the site's secret guard.

A connection string that cannot be read safely (an unencoded '@' in a password splits a URL in the
wrong place) is refused with a message that echoes no part of it: any fragment could be the password.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, unquote_plus

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from rollbook.errors import BadInput

# libpq's connection parameters that hold secrets (the client key's passphrase is sslpassword).
SECRET_KEYWORDS = ("password", "sslpassword")
MASK = "***"
# How a secret already masked by rollbook (or SQLAlchemy's hide_password) looks, raw or encoded.
_MASKED = frozenset({MASK, f"'{MASK}'", "%2A%2A%2A"})

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<rest>.*)$", re.S)
# SQLAlchemy's reading of userinfo: the user stops at ':' or '/', the password runs to the first '@'.
_USERINFO = re.compile(r"^(?P<user>[^:/@]*)(?::(?P<password>[^@]*))?@")
_ADVICE = ("Percent-encode the password ('@' is %40, ':' %3A, '/' %2F, '%' %25), or keep it out of the URL "
           "(PGPASSWORD or ~/.pgpass). Nothing was changed.")

# In free text (a notebook, a page), where a connection string has no clear end:
# scheme://user:SECRET@ -- the secret runs to the last '@' before a '/', whitespace or a quote.
_TEXT_USERINFO = re.compile(r"(?P<prefix>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"<>`]*:)(?P<secret>[^\s/'\"<>`]+)@")
# password=SECRET or sslpassword=SECRET, as a libpq keyword (quoted or not) or a URL query parameter.
# libpq allows spaces around '=', but in free text "password= next words" is prose (or a mask the
# search index dropped), so only the unspaced form is read there; the exact parser reads the rest.
_TEXT_KEYWORD = re.compile(
    r"(?P<prefix>(?<![\w-])(?:ssl)?password=)(?P<secret>'(?:\\.|[^'\\])*'|[^\s&'\"<>`\\,;)]+)")
_SCHEME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "+.-")
_TEXT_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://(?P<rest>[^\s'\"<>`]+)")


class UnreadableConnectionString(BadInput):
    """A connection string that cannot be read safely; the message names where it came from, never its text."""


@dataclass(frozen=True)
class ConnectionString:
    """A connection string split into the part that may be shown or passed on, and the secrets it carried."""

    kind: Literal["url", "keywords", "other"]
    without_secrets: str
    password: str | None = field(default=None, repr=False)
    sslpassword: str | None = field(default=None, repr=False)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secret values it carried (password, sslpassword), decoded."""
        return tuple(s for s in (self.password, self.sslpassword) if s)

    def keywords(self) -> dict[str, str]:
        """A keyword string's parameters, secrets included; only for kind 'keywords'."""
        parameters = conninfo_to_dict(self.without_secrets)
        secrets = {"password": self.password, "sslpassword": self.sslpassword}
        return {**{k: str(v) for k, v in parameters.items()}, **{k: v for k, v in secrets.items() if v is not None}}


def split_connection_string(text: str, *, source: str) -> ConnectionString:
    """Split a URL (`scheme://...`) or a libpq keyword string into its shareable part and its secrets.

    `source` names where the text came from (an option, a parameter, a variable) for messages.
    Raises UnreadableConnectionString, echoing nothing of `text`, when it cannot be read safely.
    Text that is neither a URL nor a keyword string carries no secret and is returned as it is.
    """
    url = _SCHEME.match(text.strip())
    if url:
        return _split_url(url["scheme"], url["rest"], source)
    if "=" in text:
        return _split_keywords(text, source)
    return ConnectionString("other", text)


def secrets_in_text(text: str) -> set[str]:
    """The secrets of every connection string in `text`, read every way a reader may have split them.

    A URL with an unencoded '@' or '/' in its password is read both as SQLAlchemy reads it (the
    password runs to the first '@') and as urllib does (to the last '@' before the path), so its
    secret is found whichever reading leaked it.
    """
    found: set[str] = set()
    try:
        found.update(split_connection_string(text, source="text").secrets)
    except UnreadableConnectionString:
        pass
    for match in _TEXT_URL.finditer(text):
        rest = match["rest"]
        userinfo = _USERINFO.match(rest)
        if userinfo and userinfo["password"]:
            found.add(userinfo["password"])
        netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
        user_and_password = netloc.rpartition("@")[0]
        if ":" in user_and_password:
            found.add(user_and_password.partition(":")[2])
    for match in _secret_matches(text):
        found.add(_unquoted(match["secret"]))
    return {secret for secret in found if secret and secret not in _MASKED and set(secret) != {"*"}}


def mask_secrets_in_text(text: str) -> str:
    """`text` with the secret of every connection string in it replaced by ***."""
    text = _TEXT_USERINFO.sub(lambda m: f"{m['prefix']}{MASK}@", text)
    return _TEXT_KEYWORD.sub(lambda m: f"{m['prefix']}{MASK}", text)


def secret_leaks(text: str) -> list[str]:
    """Each connection-string secret in `text` that is not masked, described without revealing it."""
    return [f"a connection-string {'password' if m.re is _TEXT_USERINFO else m['prefix'].split('=')[0].strip()} "
            f"of {len(_unquoted(m['secret']))} characters at character {m.start('secret')}"
            for m in _secret_matches(text)]


def _secret_matches(text: str) -> Iterator[re.Match[str]]:
    for matches in (_userinfo_matches(text), _keyword_matches(text)):
        for match in matches:
            if match["secret"] not in _MASKED and set(match["secret"]) != {"*"}:
                yield match


# The site's guard scans every page and record of an archive of years: the patterns are tried only where a match
# can start (next to the text every match holds), which finds what finditer finds, at a tenth of its time.
def _userinfo_matches(text: str) -> Iterator[re.Match[str]]:
    """_TEXT_USERINFO.finditer(text): a match holds one '://', after its scheme (which has no ':'), so its start is
    among the scheme characters right before a '://'."""
    end, at = 0, text.find("://")
    while at >= 0:
        start = at
        while start > end and text[start - 1] in _SCHEME_CHARACTERS:
            start -= 1
        match = next((m for s in range(start, at) if (m := _TEXT_USERINFO.match(text, s))), None)
        if match is not None:
            yield match
            end = match.end()
        at = text.find("://", match.end() if match is not None else at + 1)


def _keyword_matches(text: str) -> Iterator[re.Match[str]]:
    """_TEXT_KEYWORD.finditer(text): a match starts at a 'password=' or at the 'ssl' right before one."""
    end, at = 0, text.find("password=")
    while at >= 0:
        match = None
        for start in (at - 3, at):
            if start >= end and match is None:
                match = _TEXT_KEYWORD.match(text, start)
        if match is not None:
            yield match
            end = match.end()
        at = text.find("password=", max(end, at + 1))


def _split_url(scheme: str, rest: str, source: str) -> ConnectionString:
    userinfo = _USERINFO.match(rest)
    user = password = None
    if userinfo:
        user, password = userinfo["user"], userinfo["password"]
        rest = rest[userinfo.end():]
    authority_and_path, has_query, query = rest.partition("?")
    if "@" in authority_and_path:
        raise UnreadableConnectionString(
            f"The database URL in {source} could not be read: it holds more than one '@' before its query, "
            f"as a password with an unencoded '@' does, so it would be split in the wrong place. {_ADVICE}")
    kept, query_secrets = [], {}
    for item in query.split("&") if has_query else []:
        name, _, value = item.partition("=")
        if unquote_plus(name) in SECRET_KEYWORDS:
            query_secrets[unquote_plus(name)] = unquote_plus(value)
        elif item:
            kept.append(item)
    if password is not None and "password" in query_secrets:
        raise UnreadableConnectionString(
            f"The database URL in {source} gives a password twice (before the '@' and as ?password=): keep one, "
            "or better, keep it out of the URL (PGPASSWORD or ~/.pgpass). Nothing was changed.")
    shareable = f"{scheme}://{f'{user}@' if user else ''}{authority_and_path}{'?' + '&'.join(kept) if kept else ''}"
    return ConnectionString("url", shareable, query_secrets.get("password", unquote(password) if password else None),
                            query_secrets.get("sslpassword"))


def _split_keywords(text: str, source: str) -> ConnectionString:
    try:
        parameters = conninfo_to_dict(text)
    except ProgrammingError:
        # psycopg's message quotes the text it could not read: it is not repeated here.
        raise UnreadableConnectionString(
            f"The connection string in {source} could not be read as a URL (postgresql+psycopg://USER@HOST/DATABASE) "
            "or as libpq keywords (host=HOST dbname=DATABASE user=USER, values with spaces or quotes in "
            "single quotes, a quote or backslash escaped with a backslash). Nothing was changed.") from None
    secrets = {name: str(parameters.pop(name)) for name in SECRET_KEYWORDS if name in parameters}
    return ConnectionString("keywords", make_conninfo("", **parameters), secrets.get("password"),
                            secrets.get("sslpassword"))


def _unquoted(value: str) -> str:
    """A keyword's value as libpq reads it: single quotes removed, backslash escapes resolved."""
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value
