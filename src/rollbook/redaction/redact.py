"""Keeping secrets out of the archive: find them, scrub them from notebooks, and check bytes before filing.

A secret can reach an executed notebook in several spellings: as typed, percent-encoded inside a URL,
escaped inside JSON, or HTML-escaped inside a `text/html` output. Every function here works on all of
them, so a password is found and removed whichever way the notebook happens to carry it.
"""

from __future__ import annotations

import copy
import html
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus

from rollbook.redaction.connection_secrets import MASK, mask_secrets_in_text, secrets_in_text

# Shorter values are not treated as secrets: scrubbing "abc" from every string would mangle the record
# and hide nothing an attacker could not guess.
MIN_SECRET_LENGTH = 4
SECRET_NAME_PARTS = ("PASSWORD", "PASSWD", "SECRET", "TOKEN", "API_KEY", "APIKEY")
# Values of secret-looking variables that are settings, not secrets (TOKENIZERS_PARALLELISM=false).
_NOT_SECRETS = frozenset({"true", "false", "yes", "no", "none", "null", "on", "off"})


def collect_secrets(environ: Mapping[str, object], parameters: Mapping[str, Any]) -> frozenset[str]:
    """Every secret a run could leak: connection-string secrets, PGPASSWORD, secret-named variables and parameters.

    Each is returned with its percent-decoded and percent-encoded forms. Values shorter than
    MIN_SECRET_LENGTH characters and boolean-looking values are skipped.
    """
    found: set[str] = set()
    for name, value in environ.items():
        if not isinstance(value, str):
            continue
        found.update(secrets_in_text(value))
        if name.upper() == "PGPASSWORD" or _secret_name(name):
            found.add(value)
    for parameter, value in _walk_items(parameters):
        if isinstance(value, str):
            found.update(secrets_in_text(value))
            if parameter is not None and _secret_name(parameter):
                found.add(value)
    return with_encodings(found)


def with_encodings(secrets: Iterable[str]) -> frozenset[str]:
    """The secrets as typed, percent-decoded and percent-encoded (a URL may carry any), those worth scrubbing."""
    return frozenset(form for secret in secrets for form in _encodings(secret) if _worth_scrubbing(form))


def redact_text(text: str, secrets: frozenset[str]) -> str:
    """`text` with every secret (in any spelling) and every connection-string secret replaced by ***."""
    return str(_redact(text, _variants_longest_first(secrets)))


def redact_value(value: Any, secrets: frozenset[str]) -> Any:
    """A deep copy of a JSON-like value with every string (keys included) redacted."""
    return _redact(value, _variants_longest_first(secrets))


def redact_notebook(notebook: Mapping[str, Any], secrets: frozenset[str]) -> dict[str, Any]:
    """A deep copy of a notebook with every secret and connection-string secret replaced by ***, wherever it is.

    Cell sources, outputs of every kind (streams, tracebacks, text, HTML, JSON data), cell and
    notebook metadata (papermill's parameters included) are all plain strings in a JSON tree, so the
    whole tree is walked rather than the places a secret is known to land today.
    """
    redacted: dict[str, Any] = _redact(notebook, _variants_longest_first(secrets))
    if type(notebook) is not dict:
        # Keep nbformat's NotebookNode (attribute access) when that is what was given.
        try:
            import nbformat

            node: dict[str, Any] = nbformat.from_dict(redacted)
            return node
        except ImportError:  # pragma: no cover - nbformat is a dependency
            return redacted
    return redacted


def find_secrets(data: bytes, secrets: Iterable[str]) -> list[str]:
    """Which secrets occur in `data`, in any spelling, each described without its value.

    Returns hints such as "a 14-character secret (percent-encoded) at byte 2031": enough to find and
    fix the leak, nothing that helps guess the secret.
    """
    hints: list[str] = []
    covered: list[range] = []
    for secret in sorted(set(secrets), key=lambda s: (-len(s), s)):
        if not _worth_scrubbing(secret):
            continue
        for form, variant in _spellings(secret):
            encoded = variant.encode("utf-8", "surrogatepass")
            at = data.find(encoded)
            if at < 0:
                continue
            # collect_secrets lists a password and its encodings: report one leak once, not once per spelling.
            if not any(at in span for span in covered):
                hints.append(f"a {len(secret)}-character secret ({form}) at byte {at}")
            covered.append(range(at, at + len(encoded)))
            break
    return hints


def _secret_name(name: str) -> bool:
    upper = name.upper()
    return any(part in upper for part in SECRET_NAME_PARTS)


def _worth_scrubbing(value: str) -> bool:
    return len(value) >= MIN_SECRET_LENGTH and value.strip().lower() not in _NOT_SECRETS and set(value) != {"*"}


def _walk_items(value: Any, name: str | None = None) -> Iterable[tuple[str | None, Any]]:
    """(name, value) for every leaf of nested mappings and lists; a list's items keep the list's name."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _walk_items(item, str(key))
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _walk_items(item, name)
    else:
        yield name, value


def _encodings(secret: str) -> set[str]:
    """A secret as typed, percent-decoded and percent-encoded: a URL may carry any of them."""
    forms = {secret}
    for decoded in (unquote(secret), unquote_plus(secret)):
        forms.add(decoded)
    for form in list(forms):
        forms.update({quote(form, safe=""), quote_plus(form, safe="")})
    return forms


def _spellings(secret: str) -> list[tuple[str, str]]:
    """How a secret can appear in a notebook's bytes or strings, each with a name for messages."""
    forms = [
        ("as typed", secret),
        ("percent-encoded", quote(secret, safe="")),
        ("percent-encoded", quote_plus(secret, safe="")),
        ("percent-encoded", quote(secret)),
        ("JSON-escaped", json.dumps(secret)[1:-1]),
        ("JSON-escaped", json.dumps(secret, ensure_ascii=False)[1:-1]),
        ("HTML-escaped", html.escape(secret)),
        ("HTML-escaped", html.escape(secret, quote=False)),
        ("Python repr", repr(secret)[1:-1]),
    ]
    seen: set[str] = set()
    unique = []
    for form, text in forms:
        if text not in seen:
            seen.add(text)
            unique.append((form, text))
    return unique


def _variants_longest_first(secrets: Iterable[str]) -> tuple[str, ...]:
    # Longest first, so a secret that contains another is replaced whole rather than leaving a tail.
    variants = {text for secret in secrets if _worth_scrubbing(secret) for _, text in _spellings(secret)}
    return tuple(sorted(variants, key=lambda v: (-len(v), v)))


def _redact(value: Any, variants: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        for variant in variants:
            if variant in value:
                value = value.replace(variant, MASK)
        return mask_secrets_in_text(value)
    if isinstance(value, Mapping):
        return {_redact(key, variants) if isinstance(key, str) else key: _redact(item, variants)
                for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(item, variants) for item in value]
    return copy.deepcopy(value)
