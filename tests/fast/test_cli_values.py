"""What the CLI does with a value before any runbook starts: `-p` typing and s3:// without boto3."""

from __future__ import annotations

import importlib.util
import math
from typing import Any

import pytest
from click.testing import CliRunner

from rollbook import s3_support
from rollbook.cli import main, papermill_value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("True", True),
        ("False", False),
        ("None", None),
        ("3", 3),
        ("-1", -1),
        ("0002", 2),  # why revision ids go through -r: papermill's -p makes this a number
        ("1_000", 1000),
        ("2.5", 2.5),
        ("-1e3", -1000.0),
        ("true", "true"),
        ("staging", "staging"),
        ("4b7e2a91c0d3", "4b7e2a91c0d3"),
        ("", ""),
    ],
)
def test_p_values_are_typed_as_papermill_types_them(text: str, expected: Any) -> None:
    value = papermill_value(text)
    assert value == expected
    assert type(value) is type(expected)


def test_nan_is_a_float_as_in_papermill() -> None:
    value = papermill_value("nan")
    assert isinstance(value, float) and math.isnan(value)


@pytest.fixture
def without_boto3(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        return None if name == "boto3" else real_find_spec(name, package)

    monkeypatch.setattr(s3_support.importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize(
    ("arguments", "given_as"),
    [
        (["run", "status", "--output", "s3://records/run.ipynb"], "--output"),
        (["archive", "add", "s3://records/run.ipynb"], "NOTEBOOK"),
    ],
)
def test_an_s3_location_without_boto3_names_the_extra(
    without_boto3: None, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, arguments: list[str], given_as: str
) -> None:
    monkeypatch.setenv("ROLLBOOK_ARCHIVE", str(tmp_path / "records"))

    result = CliRunner().invoke(main, arguments)

    assert result.exit_code == 2
    assert f"{given_as} is an s3:// URL" in result.output
    assert "pip install 'rollbook[s3]'" in result.output
    assert "Nothing was run" in result.output
    assert not (tmp_path / "records").exists()


def test_a_local_output_needs_no_boto3(without_boto3: None) -> None:
    s3_support.require_s3_support("records/run.ipynb", "--output")
