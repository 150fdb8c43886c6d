"""The policy gate on real plans of the bundled demo: every rule, its reason, and what would make it pass."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from pg import PgServer, database_name

from rollbook.demo.project import sample_data
from rollbook.demo.server import DEMO_CONFIG, install_demo
from rollbook.errors import BadInput
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.planning.plan import DowngradePlan, plan_downgrade
from rollbook.policy.gate import (
    PolicyDecision,
    PolicyRefused,
    RollbackRequest,
    RuleResult,
    evaluate_policy,
    parse_deployed_at,
)
from rollbook.policy.rules import DEFAULTS_SOURCE, default_policy, load_policy
from rollbook.project.migrations import alembic_config_for, load_project

NOW = datetime(2026, 1, 13, 14, 0, tzinfo=UTC)
RULES = ("operator", "rollback allowed", "deployment window", "approver", "approved plan", "risk", "atomic steps",
         "data written", "what blocks the downgrade", "backup strategy", "backup")


@dataclass(frozen=True)
class DemoPlans:
    high: DowngradePlan  # head -1: the data migration (HIGH), 9 rows rewritten
    low_with_data: DowngradePlan  # 0607bc5b8534 -1: drops user_preferences (LOW) holding 7 rows
    uncounted: DowngradePlan  # the same, planned without live checks
    low_empty: DowngradePlan  # the same after the rows were deleted: nothing written
    blocking: DowngradePlan  # 0607bc5b8533 -1: narrows users.email (MEDIUM); long emails make it fail


@pytest.fixture(scope="module")
def plans(pg_server: PgServer) -> Iterator[DemoPlans]:
    """Plans of the demo at several revisions; planning is read-only, so one database serves the module."""
    url = pg_server.create_database()
    try:
        target = DatabaseTarget.from_url(url)
        project = load_project(DEMO_CONFIG)
        install_demo(target)
        config = alembic_config_for(project, target)
        high = plan_downgrade(target, project, "-1")
        command.downgrade(config, "0607bc5b8534")
        low_with_data = plan_downgrade(target, project, "-1")
        uncounted = plan_downgrade(target, project, "-1", live_checks=False)
        with connect(target) as conn:
            conn.execute("DELETE FROM user_preferences")
        low_empty = plan_downgrade(target, project, "-1")
        command.downgrade(config, "0607bc5b8533")
        blocking = plan_downgrade(target, project, "-1")
        yield DemoPlans(high, low_with_data, uncounted, low_empty, blocking)
    finally:
        pg_server.drop_database(database_name(url))


def request(plan: DowngradePlan, **changes) -> RollbackRequest:
    """A production request the defaults allow for a harmless plan: deployed 2 minutes ago, approved by alice."""
    base = RollbackRequest(
        environment="production", operator="bob", approved_by="alice", approved_plan=plan.plan_hash,
        deployed_at=NOW - timedelta(minutes=2), execute=True, now=NOW,
    )
    return replace(base, **changes)


def decide(plan: DowngradePlan, backup_verified: bool | None = True, **changes) -> PolicyDecision:
    return evaluate_policy(default_policy(), request(plan, **changes), plan, backup_verified=backup_verified)


def rule(decision: PolicyDecision, name: str) -> RuleResult:
    return next(r for r in decision.results if r.rule == name)


def failed(decision: PolicyDecision) -> list[str]:
    return [r.rule for r in decision.results if r.outcome == "fail"]


def test_the_demo_plans_are_what_the_cases_need(plans):
    assert [(s.migration_type, s.risk.value) for s in plans.high.steps] == [("data_migration", "high")]
    assert [(s.migration_type, s.risk.value) for s in plans.low_empty.steps] == [("add_table", "low")]
    assert plans.low_with_data.verdict.code == "loses_data"
    assert plans.uncounted.verdict.code == "review_by_hand"
    assert plans.low_empty.verdict.code == "safe"
    assert [(s.migration_type, s.risk.value) for s in plans.blocking.steps] == [("alter_column", "medium")]
    # The hash names what the downgrade does, not today's counts: deleting rows leaves it unchanged.
    assert plans.low_empty.plan_hash == plans.low_with_data.plan_hash != plans.high.plan_hash


def test_production_allows_a_low_risk_step_right_after_deployment_with_approval_and_backup(plans):
    decision = decide(plans.low_empty)

    assert [r.rule for r in decision.results] == list(RULES)
    assert [r.outcome for r in decision.results] == ["pass"] * len(RULES)
    assert decision.allowed and not decision.refused and decision.status == "allowed"
    assert rule(decision, "approver").reason == "approved by alice (not the operator bob)"
    assert rule(decision, "deployment window").reason == (
        "deployed 2 min 0 s ago, within the 5-minute window of production")
    assert rule(decision, "approved plan").reason == f"the plan is the one approved ({plans.low_empty.plan_hash[:12]})"
    assert rule(decision, "risk").reason == "highest risk LOW (0607bc5b8534 add_table); no HIGH-risk step"
    assert decision.rules_source == DEFAULTS_SOURCE
    decision.enforce(final=True)
    assert decision.refusal_message() == ""


def test_production_refuses_the_high_risk_data_migration_and_says_what_to_do_instead(plans):
    decision = decide(plans.high, approved_plan=plans.high.plan_hash, accept_data_loss=True)

    assert decision.refused and not decision.allowed
    risk = rule(decision, "risk")
    assert risk.outcome == "fail"
    assert risk.reason == ("production allows no HIGH-risk step (accept_data_loss does not override this): "
                           "0607bc5b8536 (data_migration) HIGH")
    assert "restore from the backup taken before the migration" in risk.remedy and "fix forward" in risk.remedy
    # The data migration's downgrade rewrites every 'active' row: data the production rule protects.
    rewritten = sample_data.ACTIVE_BEFORE_BACKFILL + sample_data.NULL_STATUS_BEFORE_BACKFILL
    assert f"{rewritten} rows rewritten" in rule(decision, "data written").reason
    assert failed(decision) == ["risk", "data written"]

    with pytest.raises(PolicyRefused) as refused:
        decision.enforce()
    message = str(refused.value)
    assert refused.value.exit_code == 4
    # A headline, one line per failed rule, then what to do instead.
    headline, *rules, instead = message.split("\n")
    assert headline == ("The rollback policy of production (defaults (the team's rollback procedure)) "
                        f"refuses this rollback of plan {plans.high.plan_hash[:12]}:")
    assert [line.split(":")[0] for line in rules] == ["- Rule 'risk' fails", "- Rule 'data written' fails"]
    assert rules[0].startswith("- Rule 'risk' fails: production allows no HIGH-risk step")
    assert message.endswith("Instead of rolling back, restore from the backup taken before the migration "
                            "(pg_restore), or fix forward with a new migration.")


def test_production_refuses_a_low_risk_step_once_data_was_written_using_the_new_schema(plans):
    decision = decide(plans.low_with_data)

    assert failed(decision) == ["data written"]
    written = rule(decision, "data written")
    assert "forbids rolling back after data has been written using the new schema" in written.reason
    assert f"drops table user_preferences and all its rows: {sample_data.USER_PREFERENCE_ROWS} rows lost" in (
        written.reason)
    assert "fix forward" in written.remedy


def test_a_plan_that_was_not_counted_is_never_treated_as_safe(plans):
    decision = decide(plans.uncounted)

    assert failed(decision) == ["risk", "data written"]
    assert "REVIEW BY HAND" in rule(decision, "risk").reason
    assert rule(decision, "data written").reason.startswith(
        "rollbook cannot show that no data was written using the new schema")
    assert "live checks" in rule(decision, "data written").remedy


@pytest.mark.parametrize(
    ("changes", "rule_name", "reason", "remedy"),
    [
        ({"deployed_at": NOW - timedelta(minutes=6)}, "deployment window",
         "deployed 6 min 0 s ago (2026-01-13T13:54:00+00:00), past the 5-minute window of production; new data may "
         "already depend on the new schema",
         "past the window production is forward-only: fix forward with a new migration, or restore from the "
         "backup taken before the migration"),
        ({"deployed_at": None}, "deployment window",
         "deployed_at is not given, so the 5-minute window of production cannot be checked",
         "pass deployed_at (-p deployed_at 2026-01-13T14:05:00Z: the ISO 8601 time the migration was deployed)"),
        ({"deployed_at": NOW + timedelta(hours=1)}, "deployment window",
         "deployed_at 2026-01-13T15:00:00+00:00 is 1 h 0 min in the future",
         "pass the time the migration was actually deployed, with its correct UTC offset"),
        ({"approved_by": ""}, "approver", "production requires explicit approval and nobody is named",
         "have the team lead review the plan and pass approved_by (-p approved_by NAME)"),
        ({"approved_by": " Bob "}, "approver", "Bob would approve their own rollback",
         "a second person (the team lead) must approve: pass their name as approved_by"),
        ({"operator": ""}, "operator", "nobody is named as the operator, and who ran a rollback must be recorded",
         "pass operator (-p operator NAME: the person running this rollback)"),
        ({"approved_plan": "904d"}, "approved plan",
         "approved_plan '904d' is not a plan hash or a prefix of at least 8 hex characters", None),
    ],
    ids=["outside-window", "no-deployed-at", "deployed-in-future", "no-approver", "self-approval",
         "no-operator", "short-hash"],
)
def test_production_refusals_name_the_rule_and_what_would_make_it_pass(plans, changes, rule_name, reason, remedy):
    decision = decide(plans.low_empty, **changes)

    assert failed(decision) == [rule_name]
    result = rule(decision, rule_name)
    assert result.reason == reason
    assert result.remedy == remedy or remedy is None and plans.low_empty.plan_hash[:12] in result.remedy
    assert f"Rule '{rule_name}' fails: {reason}" in decision.refusal_message()


def test_a_plan_that_changed_since_approval_is_refused_with_both_hashes(plans):
    approved = plans.high.plan_hash
    decision = decide(plans.low_empty, approved_plan=approved[:10])

    assert failed(decision) == ["approved plan"]
    result = rule(decision, "approved plan")
    current = plans.low_empty.plan_hash[:12]
    assert result.reason == (f"the plan changed since it was approved: approved {approved[:10]}, now {current} "
                             "(the database, the target or a migration file differs)")
    assert result.remedy == f"have the approver review the current plan {current} and approve it again"


def test_an_approval_may_name_the_plan_by_a_prefix_of_eight_characters(plans):
    prefix = plans.low_empty.plan_hash[:8].upper()
    assert decide(plans.low_empty, approved_plan=prefix).allowed
    unnamed = decide(plans.low_empty, approved_plan="")
    assert unnamed.allowed
    assert rule(unnamed, "approved plan").reason == (
        "no plan hash given: the approval is not tied to a plan (optional in production)")


def test_the_backup_rule_is_pending_until_the_backup_is_verified(plans):
    dry_run = decide(plans.low_empty, backup_verified=None, execute=False)
    backup = rule(dry_run, "backup")
    assert (backup.outcome, backup.reason) == ("pending", "dry run: no backup is written")
    assert dry_run.status == "pending" and not dry_run.allowed and not dry_run.refused
    assert "PENDING" in dry_run.to_text() and "backup" in dry_run.headline()

    before_backup = decide(plans.low_empty, backup_verified=None)
    assert rule(before_backup, "backup").outcome == "pending"
    before_backup.enforce()  # nothing failed: the run may go on to take the backup
    with pytest.raises(PolicyRefused, match="has not yet allowed this rollback.*Rule 'backup' is pending"):
        before_backup.enforce(final=True)

    broken = decide(plans.low_empty, backup_verified=False)
    assert failed(broken) == ["backup"]
    assert rule(broken, "backup").reason == "the backup taken by this run failed verification"


def test_staging_needs_accept_data_loss_for_a_high_risk_step(plans):
    refused = decide(plans.high, environment="staging", approved_by="", approved_plan="", deployed_at=None)
    assert failed(refused) == ["risk", "data written"]
    assert rule(refused, "risk").reason == (
        "HIGH-risk step(s) need accept_data_loss in staging: 0607bc5b8536 (data_migration) HIGH")
    assert rule(refused, "risk").remedy.startswith("pass accept_data_loss (-p accept_data_loss True) if losing this data is acceptable")
    assert rule(refused, "approver").reason == "no approval required in staging"
    assert rule(refused, "deployment window").reason == "no time limit in staging"

    accepted = decide(plans.high, environment="Staging", approved_by="", approved_plan="", deployed_at=None,
                      accept_data_loss=True)
    assert accepted.allowed and accepted.environment == "staging"
    assert rule(accepted, "risk").reason.startswith("HIGH-risk step(s) accepted with accept_data_loss")


def test_rows_that_would_make_the_downgrade_fail_refuse_it_everywhere(plans):
    for environment in ("production", "staging", "development"):
        decision = decide(plans.blocking, environment=environment, approved_plan="", accept_data_loss=True)
        blocks = rule(decision, "what blocks the downgrade")
        assert blocks.outcome == "fail"
        assert f"{sample_data.LONG_EMAILS} rows that would make it fail" in blocks.reason
        assert blocks.remedy == "fix those rows or objects first and plan again, or restore from backup instead"
        assert rule(decision, "risk").outcome == "pass"  # MEDIUM is not HIGH


def test_an_unknown_environment_lists_the_known_ones(plans):
    with pytest.raises(BadInput, match="Unknown environment 'prod'.*knows production, staging, development"):
        decide(plans.low_empty, environment="prod")


def test_the_decision_renders_as_markdown_text_and_json(plans):
    decision = decide(plans.high)

    markdown = decision._repr_markdown_()
    assert "| rule | outcome | reason | what would make it pass |" in markdown
    assert "| approver | ✅ pass | approved by alice (not the operator bob) | — |" in markdown
    assert "| risk | ❌ fail | production allows no HIGH-risk step" in markdown
    assert "**REFUSED: the production policy does not allow this rollback.**" in markdown
    text = decision.to_text()
    assert "FAIL    risk" in text and text.splitlines()[-2].startswith("REFUSED")
    record = json.loads(json.dumps(decision.to_dict()))
    assert record["status"] == "refused" and record["plan_hash"] == plans.high.plan_hash
    assert record["evaluated_at"] == "2026-01-13T14:00:00+00:00"
    assert [r["rule"] for r in record["results"]] == list(RULES)


# ----------------------------------------------------------------------------------- deployed_at


def test_deployed_at_is_read_as_iso_8601_with_a_timezone():
    assert parse_deployed_at("2026-01-13T13:58:00Z") == datetime(2026, 1, 13, 13, 58, tzinfo=UTC)
    assert parse_deployed_at(" 2026-01-13T15:58:00+02:00 ") == datetime(2026, 1, 13, 13, 58, tzinfo=UTC)
    assert parse_deployed_at("") is None
    with pytest.raises(BadInput, match="has no timezone.*2026-01-13T13:58:00Z for UTC"):
        parse_deployed_at("2026-01-13T13:58:00")
    with pytest.raises(BadInput, match="'yesterday' is not an ISO 8601 time"):
        parse_deployed_at("yesterday")
    with pytest.raises(BadInput, match="has no timezone"):
        RollbackRequest("production", "bob", deployed_at=datetime(2026, 1, 13, 13, 58))


# ---------------------------------------------------------------------------------------- config


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository root: the policy search stops here, whatever lies above the test's tmp dir."""
    (tmp_path / ".git").mkdir()
    return tmp_path


def test_without_a_config_file_the_procedure_defaults_apply(repo):
    rules = load_policy(repo)
    assert rules == default_policy()
    assert rules.source == DEFAULTS_SOURCE
    production = rules.for_environment("production")
    assert (production.window_minutes, production.require_approver, production.allow_high_risk,
            production.allow_data_written, production.require_backup) == (5, True, "never", "never", True)
    staging = rules.for_environment("staging")
    assert (staging.window_minutes, staging.require_approver, staging.allow_high_risk) == (
        None, False, "with_accept_data_loss")


def test_rollbook_toml_overrides_one_rule_and_keeps_the_others(repo):
    (repo / "rollbook.toml").write_text("[policy.production]\nwindow_minutes = 30\n")
    rules = load_policy(repo)

    production = rules.for_environment("production")
    assert production.window_minutes == 30 and production.require_approver
    assert rules.source == f"{repo / 'rollbook.toml'} [policy]"
    assert rules.for_environment("staging") == default_policy().for_environment("staging")


def test_pyproject_policy_is_found_from_a_subfolder_and_rollbook_toml_wins_beside_it(repo, plans):
    (repo / "pyproject.toml").write_text(
        "[project]\nname = 'app'\n\n[tool.rollbook.policy.production]\nwindow_minutes = 15\n"
        "require_approved_plan = true\n")
    nested = repo / "src" / "app"
    nested.mkdir(parents=True)
    # A pyproject.toml without [tool.rollbook] on the way up is not the policy file.
    (repo / "src" / "pyproject.toml").write_text("[project]\nname = 'inner'\n")
    rules = load_policy(nested)
    assert rules.for_environment("production").window_minutes == 15
    assert rules.source == f"{repo / 'pyproject.toml'} [tool.rollbook.policy]"

    # The configured window applies: 12 minutes after deployment is allowed now, but the plan must be named.
    late = evaluate_policy(rules, request(plans.low_empty, deployed_at=NOW - timedelta(minutes=12),
                                          approved_plan=""), plans.low_empty, backup_verified=True)
    assert failed(late) == ["approved plan"]
    assert rule(late, "deployment window").reason == "deployed 12 min 0 s ago, within the 15-minute window of production"
    assert rule(late, "approved plan").remedy.startswith("have the approver review this plan and pass its hash")

    (repo / "rollbook.toml").write_text("[policy.production]\nwindow_minutes = 2\n")
    assert load_policy(nested).for_environment("production").window_minutes == 2


def test_new_environments_start_from_production_unless_based_on_says_otherwise(repo):
    (repo / "rollbook.toml").write_text(
        "[policy.qa]\nrequire_backup = false\n\n[policy.preview]\nbased_on = 'development'\n"
        "window_minutes = false\nallow_data_written = 'always'\n")
    rules = load_policy(repo)

    qa = rules.for_environment("qa")
    assert (qa.window_minutes, qa.allow_high_risk, qa.require_backup) == (5, "never", False)
    preview = rules.for_environment("preview")
    assert (preview.window_minutes, preview.require_approver, preview.allow_data_written) == (None, False, "always")
    assert set(rules.environments) == {"production", "staging", "development", "qa", "preview"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[policy.production]\nwindow = 10\n",
         r"rollbook.toml: \[policy.production\] window is not a rule rollbook knows \(allowed keys: rollback_allowed, "
         r"window_minutes, .*based_on\)"),
        ("[policy.production]\nwindow_minutes = '5'\n",
         r"\[policy.production\] window_minutes must be a whole number of minutes above 0, or false for no window, "
         r"not '5'"),
        ("[policy.production]\nrequire_backup = 'yes'\n",
         r"\[policy.production\] require_backup must be true or false, not 'yes'"),
        ("[policy.staging]\nallow_high_risk = 'always'\n",
         r"\[policy.staging\] allow_high_risk must be one of 'never', 'with_accept_data_loss', not 'always'"),
        ("[policy.qa]\nbased_on = 'prod'\n",
         r"\[policy.qa\] based_on = 'prod' names no default environment \(allowed: production, staging, development\)"),
        ("[policy]\nproduction = 5\n", r"\[policy.production\] must be a table of rules"),
        ("[policy.production\n", r"rollbook.toml is not valid TOML"),
    ],
    ids=["unknown-key", "window-type", "bool-type", "high-risk-value", "based-on", "not-a-table", "invalid-toml"],
)
def test_a_bad_policy_file_names_the_file_the_key_and_what_is_allowed(repo, text, message):
    (repo / "rollbook.toml").write_text(text)
    with pytest.raises(BadInput, match=message) as error:
        load_policy(repo)
    assert str(repo / "rollbook.toml") in str(error.value)
    assert "Fix the file and retry" in str(error.value)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("rollbook.toml", "[production]\nwindow_minutes = 30\n", "[policy.production]"),
        ("pyproject.toml", "[tool.rollbook.staging]\nrequire_approver = true\n", "[tool.rollbook.policy.staging]"),
    ],
)
def test_environment_rules_outside_the_policy_table_are_not_silently_ignored(repo, name, text, expected):
    (repo / name).write_text(text)
    with pytest.raises(BadInput, match=re.escape(f"must be in the table {expected}, not at this level")):
        load_policy(repo)


def test_a_bad_pyproject_policy_names_its_table(repo):
    (repo / "pyproject.toml").write_text("[tool.rollbook.policy.production]\nallow_data_written = true\n")
    with pytest.raises(BadInput, match=r"pyproject.toml: \[tool.rollbook.policy.production\] allow_data_written "
                                       r"must be one of 'never', 'with_accept_data_loss', 'always', not True"):
        load_policy(repo)


def test_a_team_can_make_an_environment_forward_only_or_allow_self_approval(repo, plans):
    (repo / "rollbook.toml").write_text(
        "[policy.staging]\nrollback_allowed = false\n\n[policy.development]\nrequire_approver = true\n"
        "approver_not_operator = false\n")
    rules = load_policy(repo)

    staging = evaluate_policy(rules, request(plans.low_empty, environment="staging"), plans.low_empty,
                              backup_verified=True)
    assert failed(staging) == ["rollback allowed"]
    assert rule(staging, "rollback allowed").reason == (
        f"staging is forward-only without exceptions ({repo / 'rollbook.toml'} [policy])")
    assert "restore from backup or fix forward" in rule(staging, "rollback allowed").remedy

    development = evaluate_policy(rules, request(plans.low_empty, environment="development", approved_by="bob"),
                                  plans.low_empty, backup_verified=True)
    assert development.allowed
    assert rule(development, "approver").reason == "approved by bob (also the operator; allowed in development)"
