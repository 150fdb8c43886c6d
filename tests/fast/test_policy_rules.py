"""Policy rules without a database: the defaults are the team's procedure, a project's rollbook.toml or
pyproject.toml changes them per environment, and a mistake in the file is refused, never silently ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from rollbook.errors import BadInput
from rollbook.policy.rules import DEFAULTS_SOURCE, PRODUCTION, STAGING, default_policy, load_policy


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A repository root: the search for settings stops here instead of walking up the machine's folders."""
    (tmp_path / ".git").mkdir()
    return tmp_path


def policy_file(project: Path, text: str, name: str = "rollbook.toml") -> Path:
    (project / name).write_text(text)
    return project


def test_production_is_forward_only_with_narrow_exceptions() -> None:
    production = default_policy().for_environment("production")

    assert production == PRODUCTION
    assert (production.window_minutes, production.require_approver, production.approver_not_operator) == (5, True, True)
    assert (production.require_backup, production.allow_high_risk, production.allow_data_written) == (
        True, "never", "never")


def test_staging_and_development_need_only_a_yes_to_lose_data() -> None:
    policy = default_policy()

    assert policy.for_environment("staging") == policy.for_environment("development") == STAGING
    assert (STAGING.window_minutes, STAGING.require_approver, STAGING.allow_high_risk) == (
        None, False, "with_accept_data_loss")


def test_environment_names_are_case_insensitive_and_unknown_ones_refused() -> None:
    assert default_policy().for_environment(" Production ") == PRODUCTION
    with pytest.raises(BadInput) as raised:
        default_policy().for_environment("qa")
    assert str(raised.value) == (
        f"Unknown environment 'qa': the rollback policy ({DEFAULTS_SOURCE}) knows production, staging, development. "
        "Pass one of those, or add a table for 'qa' to the policy file.")


def test_without_a_file_the_defaults_apply(project: Path) -> None:
    assert load_policy(project).source == DEFAULTS_SOURCE


def test_backup_strategies_default_to_full_and_a_file_chooses_them_with_the_default_first(project: Path) -> None:
    assert (PRODUCTION.backup_strategies, PRODUCTION.default_backup_strategy) == (("full", "pitr"), "full")
    assert (STAGING.backup_strategies, STAGING.default_backup_strategy) == (
        ("full", "parallel", "at-risk", "pitr"), "full")

    production = load_policy(policy_file(project, '[policy.production]\nbackup_strategies = ["pitr", "full"]\n'))

    assert production.for_environment("production").default_backup_strategy == "pitr"
    assert production.to_dict()["environments"]["production"]["backup_strategies"] == ["pitr", "full"]


def test_a_file_changes_only_the_rules_it_names(project: Path) -> None:
    policy = load_policy(policy_file(project, "[policy.staging]\nrequire_approver = true\nwindow_minutes = 30\n"))

    staging = policy.for_environment("staging")
    assert (staging.require_approver, staging.window_minutes) == (True, 30)
    assert staging.allow_high_risk == STAGING.allow_high_risk
    assert policy.for_environment("production") == PRODUCTION
    assert policy.source == f"{project / 'rollbook.toml'} [policy]"


def test_a_new_environment_starts_from_production_unless_based_on_says_otherwise(project: Path) -> None:
    policy = load_policy(policy_file(project, "[policy.canary]\nwindow_minutes = false\n\n"
                                              "[policy.preview]\nbased_on = \"staging\"\n"))

    canary = policy.for_environment("canary")
    assert canary.window_minutes is None  # false switches the window off: TOML has no null
    assert (canary.require_approver, canary.allow_high_risk) == (True, "never")
    assert policy.for_environment("preview") == STAGING


def test_an_environment_waits_a_minute_for_its_restore_point_to_be_archived_unless_the_file_says_otherwise(
        project: Path) -> None:
    policy = load_policy(policy_file(project, "[policy.production]\npitr_archive_wait_seconds = 300\n"))

    assert policy.for_environment("production").pitr_archive_wait_seconds == 300.0
    assert policy.for_environment("staging").pitr_archive_wait_seconds == 60.0


def test_pyproject_tool_rollbook_is_read_too(project: Path) -> None:
    policy = load_policy(policy_file(project, "[tool.rollbook.policy.production]\nwindow_minutes = 10\n",
                                     name="pyproject.toml"))

    assert policy.for_environment("production").window_minutes == 10
    assert policy.source.endswith("pyproject.toml [tool.rollbook.policy]")


@pytest.mark.parametrize(("text", "problem"), [
    ('[policy.production]\nallow_high_risk = "sometimes"\n',
     "[policy.production] allow_high_risk must be one of 'never', 'with_accept_data_loss', not 'sometimes'. "
     "Fix the file and retry; nothing was changed."),
    ('[policy.production]\nrequire_backup = "yes"\n',
     "[policy.production] require_backup must be true or false, not 'yes'. Fix the file and retry; nothing was "
     "changed."),
    ("[policy.production]\nwindow_minutes = 0\n",
     "[policy.production] window_minutes must be a whole number of minutes above 0, or false for no window, not 0. "
     "Fix the file and retry; nothing was changed."),
    ("[policy.production]\nwindow = 5\n",
     "[policy.production] window is not a rule rollbook knows (allowed keys: rollback_allowed, window_minutes, "
     "require_approver, approver_not_operator, require_backup, allow_high_risk, allow_data_written, "
     "require_approved_plan, require_rehearsal, backup_strategies, pitr_archive_wait_seconds, based_on). Fix the file "
     "and retry; nothing was changed."),
    ('[policy.canary]\nbased_on = "qa"\n',
     "[policy.canary] based_on = 'qa' names no default environment (allowed: production, staging, development). "
     "Fix the file and retry; nothing was changed."),
    ("[production]\nrequire_backup = false\n",
     "the rules of 'production' must be in the table [policy.production], not at this level, or rollbook would "
     "ignore them. Move them there and retry."),
    ("policy = 3\n",
     "[policy] must be a table of environments, like [policy.production]. Fix the file and retry."),
    ('[policy.production]\nbackup_strategies = "pitr"\n',
     "[policy.production] backup_strategies must be a list of strategies without repeats, the default first, like "
     "[\"pitr\", \"full\"], not 'pitr'. Fix the file and retry; nothing was changed."),
    ('[policy.production]\nbackup_strategies = ["full", "full"]\n',
     "[policy.production] backup_strategies must be a list of strategies without repeats, the default first, like "
     "[\"pitr\", \"full\"], not ['full', 'full']. Fix the file and retry; nothing was changed."),
    ('[policy.production]\nbackup_strategies = ["snapshot"]\n',
     "[policy.production] backup_strategies names 'snapshot', which is no strategy rollbook knows (known: full, "
     "parallel, at-risk, pitr). Fix the file and retry; nothing was changed."),
    ('[policy.production]\npitr_archive_wait_seconds = "5min"\n',
     "[policy.production] pitr_archive_wait_seconds must be a number of seconds above 0 and at most 3600, not '5min'. "
     "Fix the file and retry; nothing was changed."),
    ("[policy.production]\npitr_archive_wait_seconds = 0\n",
     "[policy.production] pitr_archive_wait_seconds must be a number of seconds above 0 and at most 3600, not 0. "
     "Fix the file and retry; nothing was changed."),
])
def test_a_mistake_in_the_file_is_refused_naming_the_file_and_the_rule(project: Path, text: str, problem: str) -> None:
    path = policy_file(project, text) / "rollbook.toml"

    with pytest.raises(BadInput) as raised:
        load_policy(project)

    assert str(raised.value) == f"{path}: {problem}"


def test_loaded_rules_cannot_be_changed_afterwards(project: Path) -> None:
    policy = load_policy(project)

    with pytest.raises(TypeError):
        policy.environments["production"] = STAGING  # type: ignore[index]
