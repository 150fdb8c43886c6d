"""The policy gate of a restore over the database: the rollback gate's rules that fit, and writes and objects since."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from rollbook.planning.downgrade_path import DowngradePath
from rollbook.planning.plan import DowngradePlan
from rollbook.planning.verdict import judge
from rollbook.policy.gate import SHORT_HASH, PolicyDecision, RollbackRequest, RuleResult, evaluate_policy
from rollbook.policy.rules import PolicyRules
from rollbook.recovery.restore_plan import RestorePlan
from rollbook.recovery.writes_since_backup import WritesSinceBackup

RESTORE_INSTEAD = ("Instead, restore into a new database (restore_into new) and compare it with this one, or fix "
                   "forward with a new migration.")


@dataclass(frozen=True)
class RestoreDecision(PolicyDecision):
    """The environment's policy applied to a restore over the database: the rollback gate's rules that fit.

    Kept from the rollback policy: the operator, the approver (a second person in production), the
    approved hash (here the restore's) and the verified backup taken by this run (of the database as it
    is, before it is overwritten). The window and the risk rules are left out: restoring the backup is
    what they recommend instead of a rollback. Added: writes since the backup, and objects created since.
    """

    subject: ClassVar[str] = "restore"
    hash_label: ClassVar[str] = "restore plan"
    alternative: ClassVar[str] = f"{RESTORE_INSTEAD} Nothing was restored; the database was not touched."


def evaluate_restore_policy(
    rules: PolicyRules, request: RollbackRequest, plan: RestorePlan, writes: WritesSinceBackup, *,
    accept_writes_since_backup: bool, backup_verified: bool | None,
) -> RestoreDecision:
    """Apply the environment's rules to restoring over the database; `backup_verified` None: not taken yet."""
    env = rules.for_environment(request.environment)
    name = request.environment.strip().lower()
    shared = shared_rollback_rules(rules, request, plan.database, plan.revisions_now, backup_verified=backup_verified)
    results = (
        shared["operator"],
        shared["approver"],
        approved_hash_rule(env.require_approved_plan, name, request.approved_plan, plan.restore_hash,
                           what="restore", reviewed="restore plan"),
        created_since_rule(plan),
        writes_rule(writes, accept_writes_since_backup),
        shared["backup"],
    )
    return RestoreDecision(name, rules.source, results, plan.restore_hash, request.now)


def shared_rollback_rules(rules: PolicyRules, request: RollbackRequest, database: str,
                          revisions_now: tuple[str, ...], *, backup_verified: bool | None) -> dict[str, RuleResult]:
    """The rollback gate's own results, by rule name, for a run that undoes no migration (a restore of any kind).

    The rollback gate itself decides the rules a restore shares with it (operator, approver, backup), so a
    restore can never be looser than a rollback there. Its plan hash rule is left to the restore's own hash.
    """
    start = revisions_now[0] if revisions_now else "base"
    path = DowngradePath(revisions_now, start, start, "restore", ())
    no_steps = DowngradePlan(database, path, (), judge((), True), (), True)
    decision = evaluate_policy(rules, replace(request, approved_plan=""), no_steps, backup_verified=backup_verified)
    return {r.rule: r for r in decision.results}


def approved_hash_rule(required: bool, name: str, approved: str, expected: str, *, what: str,
                       reviewed: str) -> RuleResult:
    """Whether `approved` (-r approved_plan) names `expected`, the hash of this `what` as its `reviewed` shows it."""
    given = approved.strip().lower()
    short = expected[:SHORT_HASH]
    if not given:
        if required:
            return RuleResult("approved restore", "fail", f"{name} requires the approval to name the {what} reviewed",
                              f"have the approver review this {reviewed} and pass its hash (-r approved_plan "
                              f"{short})")
        return RuleResult("approved restore", "pass", f"no hash given: the approval is not tied to this {what} "
                          f"(optional in {name})")
    if len(given) < 8 or any(c not in "0123456789abcdef" for c in given) or not expected.startswith(given):
        return RuleResult("approved restore", "fail",
                          f"approved_plan {approved.strip()!r} does not name this {what} ({short}): the backup, the "
                          "database or its revision differ from what was approved",
                          f"have the approver review the {reviewed} and approve it (-r approved_plan {short})")
    return RuleResult("approved restore", "pass", f"the {what} is the one approved ({short})")


def created_since_rule(plan: RestorePlan) -> RuleResult:
    if not plan.created_since:
        return RuleResult("objects created since the backup", "pass",
                          "the backup holds every table, view and sequence the database has now")
    return RuleResult(
        "objects created since the backup", "fail",
        f"the database has {', '.join(plan.created_since)}, which the backup does not hold: pg_restore --clean drops "
        "and re-creates only what the backup holds, so they would stay (and block it if they depend on its tables), "
        f"next to a version table saying {plan.backup.revision_label}",
        "undo the migrations that created them first (rollbook's rollback runbook), or drop them, and plan the restore "
        "again; or restore into a new database")


def writes_rule(writes: WritesSinceBackup, accept: bool) -> RuleResult:
    if writes.passed:
        return RuleResult("writes since the backup", "pass", writes.detail)
    facts = "; ".join(t.describe() for t in writes.changed) or writes.detail
    if accept:
        return RuleResult("writes since the backup", "pass",
                          f"accepted with accept_writes_since_backup: these changes are undone: {facts}")
    return RuleResult("writes since the backup", "fail",
                      f"restoring would undo what changed since the backup ({writes.status}): {facts}",
                      "restore into a new database and compare first; pass accept_writes_since_backup (-p "
                      "accept_writes_since_backup True) if undoing these changes is intended")
