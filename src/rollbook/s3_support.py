"""`s3://` locations need the `[s3]` extra: papermill's S3 handler imports boto3, which a plain install lacks."""

from __future__ import annotations

import importlib.util

from rollbook.errors import BadInput

S3_PREFIX = "s3://"


def require_s3_support(location: str, given_as: str) -> None:
    """Refuse an `s3://` location up front, naming the extra to install, when boto3 is not installed.

    Without this, papermill would fail only after the run, suggesting `pip install papermill[s3]`.
    """
    if not location.startswith(S3_PREFIX) or importlib.util.find_spec("boto3") is not None:
        return
    raise BadInput(
        f"{given_as} is an s3:// URL, and reading or writing S3 needs boto3, which is not installed. Install "
        "rollbook with its s3 extra (pip install 'rollbook[s3]') or give a local path. Nothing was run."
    )
