"""The policy gate of putting back lost data: the rollback gate's rules that fit, and the approved restore hash."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import ClassVar

from rollbook.policy.gate import PolicyDecision, RollbackRequest
from rollbook.policy.rules import PolicyRules
from rollbook.recovery.at_risk_backup import AtRiskBackup
from rollbook.recovery.restore_policy import approved_hash_rule, shared_rollback_rules

# What an approval of a lost-data restore is asked to review: the dry run prints the hash.
REVIEWED = "lost-data restore (its dry run prints the hash)"


@dataclass(frozen=True)
class LostDataRestoreDecision(PolicyDecision):
    """The environment's policy applied to writing an at-risk backup's rows and values back into the database.

    Kept from the rollback policy: the operator, the approver (a second person in production) and the
    approved hash (here the lost-data restore's: the backup's manifest, the tables and columns it
    fills, the database's revision now). Left out: the window, risk, data-written, blocking, strategy and
    rehearsal rules, which judge a downgrade (this run undoes a downgrade's loss), and the backup rule:
    this run takes no backup, it writes only the saved rows and values, in one transaction verified
    against them.
    """

    subject: ClassVar[str] = "lost-data restore"
    hash_label: ClassVar[str] = "restore hash"
    alternative: ClassVar[str] = ("Nothing was written; the database was not touched, and the saved data stays in the "
                                  "at-risk backup until the restore is allowed.")


def lost_data_restore_hash(backup: AtRiskBackup, revisions_now: tuple[str, ...]) -> str:
    """A digest of the restore (the backup's manifest, what it fills, the revision now), for approvals to name.

    The manifest's sha256 pins every saved file, whose own sha256 it lists; the targets are spelt out so the
    hash changes with them even for a manifest written by hand.
    """
    shape = {"manifest_sha256": backup.manifest_sha256, "database": backup.database,
             "system_identifier": backup.system_identifier, "revisions_now": list(revisions_now),
             "targets": [{"table": f.qualified_table, "keep": f.keep, "columns": [name for name, _ in f.columns]}
                         for f in backup.files]}
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()


def evaluate_lost_data_restore_policy(rules: PolicyRules, request: RollbackRequest, backup: AtRiskBackup,
                                      revisions_now: tuple[str, ...]) -> LostDataRestoreDecision:
    """Apply the environment's rules to putting `backup` back into the database, now at `revisions_now`."""
    env = rules.for_environment(request.environment)
    name = request.environment.strip().lower()
    restore_hash = lost_data_restore_hash(backup, revisions_now)
    shared = shared_rollback_rules(rules, request, backup.database, revisions_now, backup_verified=None)
    results = (
        shared["operator"],
        shared["approver"],
        approved_hash_rule(env.require_approved_plan, name, request.approved_plan, restore_hash,
                           what="lost-data restore", reviewed=REVIEWED),
    )
    return LostDataRestoreDecision(name, rules.source, results, restore_hash, request.now)
