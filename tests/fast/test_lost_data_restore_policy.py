"""The restore-lost-data gate without a database: the rollback gate's operator and approver rules, and a restore
hash that names exactly what is put back (the backup's manifest, what it fills, the revision now)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rollbook.policy.gate import RollbackRequest
from rollbook.policy.rules import PolicyRules, default_policy
from rollbook.recovery.at_risk_backup import AtRiskBackup, SavedFile
from rollbook.recovery.lost_data_restore_policy import evaluate_lost_data_restore_policy, lost_data_restore_hash

SAVED = SavedFile("01_public.users_preferences.copy", "public", "users", "key_and_columns", ("id",),
                  (("id", "integer"), ("preferences", "jsonb")), None, 5, 120, "a" * 64, "0607bc5b8531",
                  "drops users.preferences")
BACKUP = AtRiskBackup(Path("/backups/at-risk_app"), (SAVED,), "b" * 64, "app", "7301", ("0607bc5b8531",),
                      "0607bc5b8530", "c" * 64, "2026-12-01T19:35:19Z", 0.2, manifest_sha256="d" * 64)
NOW = ("0607bc5b8531",)


def decide(environment: str = "production", approved_by: str = "", approved_plan: str = "",
           rules: PolicyRules | None = None, operator: str = "alice"):
    request = RollbackRequest(environment=environment, operator=operator, approved_by=approved_by,
                              approved_plan=approved_plan, execute=True)
    return evaluate_lost_data_restore_policy(rules or default_policy(), request, BACKUP, NOW)


def test_production_needs_a_second_person_and_staging_does_not() -> None:
    alone = decide()
    assert [r.rule for r in alone.failed] == ["approver"]
    message = alone.refusal_message()
    assert "The lost-data restore policy of production" in message and "-p approved_by NAME" in message
    assert "Nothing was written; the database was not touched" in message
    assert [r.rule for r in decide(approved_by="alice").failed] == ["approver"]  # not the operator
    assert decide(approved_by="bob").allowed
    assert decide("staging").allowed and decide("development").allowed
    # Only the rules that fit putting data back: no window, risk, backup or rehearsal rule of a rollback.
    assert [r.rule for r in alone.results] == ["operator", "approver", "approved restore"]


def test_an_approved_hash_must_name_this_restore_where_the_policy_requires_one() -> None:
    strict = PolicyRules({**default_policy().environments,
                          "production": replace(default_policy().environments["production"],
                                                require_approved_plan=True)}, source="rollbook.toml [policy]")
    expected = lost_data_restore_hash(BACKUP, NOW)

    missing = decide(approved_by="bob", rules=strict)
    assert [r.rule for r in missing.failed] == ["approved restore"]
    assert f"-r approved_plan {expected[:12]}" in missing.refusal_message()
    wrong = decide(approved_by="bob", approved_plan="0" * 12, rules=strict)
    assert [r.rule for r in wrong.failed] == ["approved restore"]
    assert "does not name this lost-data restore" in wrong.refusal_message()
    assert f"-r approved_plan {expected[:12]}" in wrong.refusal_message()
    assert decide(approved_by="bob", approved_plan=expected[:12].upper(), rules=strict).allowed
    assert decide(approved_by="bob", approved_plan=expected, rules=strict).plan_hash == expected
    # Optional by default: an approval without a hash is not tied to this restore, and says so.
    [approved] = [r for r in decide(approved_by="bob").results if r.rule == "approved restore"]
    assert approved.outcome == "pass" and "optional in production" in approved.reason


def test_the_restore_hash_changes_with_the_backup_its_targets_and_the_revision_now() -> None:
    expected = lost_data_restore_hash(BACKUP, NOW)
    assert lost_data_restore_hash(BACKUP, NOW) == expected and len(expected) == 64
    assert lost_data_restore_hash(replace(BACKUP, manifest_sha256="e" * 64), NOW) != expected
    other_column = replace(SAVED, columns=(("id", "integer"), ("settings", "jsonb")))
    assert lost_data_restore_hash(replace(BACKUP, files=(other_column,)), NOW) != expected
    assert lost_data_restore_hash(BACKUP, ("0607bc5b8532",)) != expected


def test_the_gate_is_never_looser_than_a_rollback_where_they_share_a_rule() -> None:
    # A team that requires an approver in staging for rollbacks gets it for putting data back too.
    rules = PolicyRules({**default_policy().environments,
                         "staging": replace(default_policy().environments["staging"], require_approver=True)})
    assert [r.rule for r in decide("staging", rules=rules).failed] == ["approver"]
