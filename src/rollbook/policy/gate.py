"""The policy gate: whether this rollback may run here, rule by rule, with what would make it pass.
One idea at about 450 lines, kept whole: the request, the decision and one short function per rule are read
together whenever a rule changes (policy/rules.py holds the settings).

Each rule of the environment's rules (policy/rules.py) is evaluated against the request and the plan;
a refusal names every rule that failed and what would make it pass.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

from rollbook import markdown
from rollbook.errors import BadInput, RollbookError
from rollbook.outcomes import Outcome as RunOutcome
from rollbook.planning.at_risk import at_risk_scope
from rollbook.planning.operations import NO_DOWNGRADE, Risk
from rollbook.planning.plan import DowngradePlan
from rollbook.policy.rules import EnvironmentRules, PolicyRules

Outcome = Literal["pass", "fail", "pending"]
# A plan hash prefix shorter than this could name more than one plan.
MIN_PLAN_PREFIX = 8
SHORT_HASH = 12

INSTEAD = ("Instead of rolling back, restore from the backup taken before the migration (pg_restore), "
           "or fix forward with a new migration.")


class PolicyRefused(RollbookError):
    """The rollback policy of this environment does not allow this rollback; `result` is the decision."""

    outcome = RunOutcome.REFUSED
    step = "policy gate"

    def __init__(self, message: str, decision: PolicyDecision | None = None) -> None:
        super().__init__(message)
        self.result = decision


# --------------------------------------------------------------------------------------------- request


@dataclass(frozen=True)
class RollbackRequest:
    """Who asks for which rollback where, and on whose approval."""

    environment: str
    operator: str
    approved_by: str = ""
    # The plan hash the approver reviewed, or a unique prefix of at least 8 characters.
    approved_plan: str = ""
    deployed_at: datetime | None = None
    accept_data_loss: bool = False
    execute: bool = False
    # The backup strategy asked for; empty: the environment's default (the first of its backup_strategies).
    backup_strategy: str = ""
    # How the downgrade is rehearsed before it runs: "none" or "copy" (on a restored copy of the database).
    rehearse: str = "none"
    # What the run does, as the operator and approver rules name it ("restore" for the restore gates).
    action: str = "rollback"
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        # A naive time compared with an aware one is off by the local UTC offset: refuse it.
        if self.deployed_at is not None and self.deployed_at.utcoffset() is None:
            raise BadInput(_naive_message(self.deployed_at.isoformat()))
        if self.now.utcoffset() is None:
            raise BadInput("The evaluation time 'now' has no timezone. Pass an aware datetime, "
                           "for example datetime.now(timezone.utc).")


def parse_deployed_at(text: str) -> datetime | None:
    """An ISO 8601 time with an offset or Z; None for an empty text."""
    text = text.strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(
            f"deployed_at '{text}' is not an ISO 8601 time. Write when the migration was deployed like "
            "2026-01-13T14:05:00+00:00 or 2026-01-13T14:05:00Z."
        ) from None
    if value.utcoffset() is None:
        raise BadInput(_naive_message(text))
    return value


def _naive_message(text: str) -> str:
    return (f"deployed_at '{text}' has no timezone, so the rollback window cannot be measured. Add the offset "
            f"it was recorded in, for example {text}+00:00 or {text}Z for UTC.")


# -------------------------------------------------------------------------------------------- decision


@dataclass(frozen=True)
class RuleResult:
    """One rule's outcome, why, and what would make it pass (empty when it passes)."""

    rule: str
    outcome: Outcome
    reason: str
    remedy: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "outcome": self.outcome, "reason": self.reason, "remedy": self.remedy}


@dataclass(frozen=True)
class PolicyDecision:
    """Every rule of the environment's policy applied to one plan and one request."""

    environment: str
    rules_source: str
    results: tuple[RuleResult, ...]
    plan_hash: str
    evaluated_at: datetime
    # The words for what the gate governs; a restore's decision (restore.RestoreDecision) sets its own.
    subject: ClassVar[str] = "rollback"
    hash_label: ClassVar[str] = "plan"
    alternative: ClassVar[str] = INSTEAD

    @property
    def allowed(self) -> bool:
        """Every rule passed: the downgrade may run."""
        return all(r.outcome == "pass" for r in self.results)

    @property
    def refused(self) -> bool:
        return any(r.outcome == "fail" for r in self.results)

    @property
    def status(self) -> Literal["allowed", "refused", "pending"]:
        """'pending' when nothing failed but a rule waits for a later step (the backup)."""
        return "refused" if self.refused else "allowed" if self.allowed else "pending"

    @property
    def failed(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.results if r.outcome == "fail")

    @property
    def pending(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.results if r.outcome == "pending")

    def headline(self) -> str:
        if self.refused:
            return f"REFUSED: the {self.environment} policy does not allow this {self.subject}."
        if self.allowed:
            return f"ALLOWED: every rule of the {self.environment} policy passes."
        waiting = ", ".join(r.rule for r in self.pending)
        return f"PENDING: nothing fails so far; allowed only once {waiting} passes."

    def refusal_message(self, instead: str | None = None) -> str:
        """A headline, one line per failed rule with what would make it pass, and what to do instead."""
        if not self.refused:
            return ""
        rules = "\n".join(f"- {_explain(r)}" for r in self.failed)
        return (f"The {self.subject} policy of {self.environment}, from {self.rules_source}, refuses this "
                f"{self.subject} of {self.hash_label} {self.plan_hash[:SHORT_HASH]}:\n{rules}\n"
                f"{instead or self.alternative}")

    def enforce(self, *, final: bool = False, instead: str | None = None) -> None:
        """Raise PolicyRefused if a rule failed; with `final`, also while a rule is still pending.

        `instead` is the refusal's last sentence, what to do instead (it can name the backup to restore).
        """
        if self.refused:
            raise PolicyRefused(self.refusal_message(instead), self)
        if final and not self.allowed:
            waiting = " ".join(_explain(r) for r in self.pending)
            raise PolicyRefused(
                f"The {self.subject} policy of {self.environment}, from {self.rules_source}, has not yet allowed this "
                f"{self.subject} of {self.hash_label} {self.plan_hash[:SHORT_HASH]}: {waiting} Re-evaluate the "
                "policy once the backup is verified; nothing was changed.",
                self,
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "rules_source": self.rules_source,
            "plan_hash": self.plan_hash,
            "evaluated_at": self.evaluated_at.isoformat(),
            "status": self.status,
            "allowed": self.allowed,
            "results": [r.to_dict() for r in self.results],
        }

    def to_text(self) -> str:
        lines = [f"Policy for {self.environment} from {self.rules_source}, {self.hash_label} "
                 f"{self.plan_hash[:SHORT_HASH]}:"]
        width = max((len(r.rule) for r in self.results), default=0)
        for r in self.results:
            lines.append(f"  {r.outcome.upper():7} {r.rule:{width}}  {r.reason}")
            if r.remedy:
                lines.append(f"  {'':7} {'':{width}}  -> {r.remedy}")
        lines.append(self.headline())
        if self.refused:
            lines.append(self.alternative)
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        # Words, not emoji: a page or terminal without an emoji font shows those as empty boxes.
        marks = {"pass": "pass", "fail": "**FAIL**", "pending": "pending"}
        rows = [(markdown.cell(r.rule), marks[r.outcome], markdown.cell(r.reason), markdown.cell(r.remedy) or "—")
                for r in self.results]
        intro = (f"Policy for **{markdown.cell(self.environment)}** from {markdown.code(self.rules_source)}, "
                 f"{self.hash_label} `{self.plan_hash[:SHORT_HASH]}`")
        tail = f"**{markdown.cell(self.headline())}**" + (f" {self.alternative}" if self.refused else "")
        return "\n\n".join([intro, markdown.table(["rule", "outcome", "reason", "what would make it pass"], rows),
                             tail]) + "\n"


def _explain(result: RuleResult) -> str:
    """'Rule risk fails: <reason>; <remedy>.' as one sentence of a paragraph."""
    verb = "fails" if result.outcome == "fail" else "is pending"
    remedy = f"; {result.remedy}" if result.remedy else ""
    return f"Rule '{result.rule}' {verb}: {result.reason}{remedy}."


# ------------------------------------------------------------------------------------------ evaluation


def evaluate_policy(rules: PolicyRules, request: RollbackRequest, plan: DowngradePlan, *,
                    backup_verified: bool | None) -> PolicyDecision:
    """Apply the environment's rules to `plan`; `backup_verified` None means no backup was taken yet."""
    env = rules.for_environment(request.environment)
    name = request.environment.strip().lower()
    results = (
        _operator_rule(request),
        _environment_rule(env, name, rules.source),
        _window_rule(env, name, request),
        _approver_rule(env, name, request),
        _approved_plan_rule(env, name, request, plan),
        _risk_rule(env, name, request, plan),
        _atomic_rule(env, name, request, plan),
        _data_written_rule(env, name, request, plan),
        _blocking_rule(plan),
        _strategy_rule(env, name, request, plan),
        _backup_rule(env, name, request, backup_verified),
        _rehearsal_rule(env, name, request),
    )
    return PolicyDecision(name, rules.source, results, plan.plan_hash, request.now)


def chosen_backup_strategy(rules: PolicyRules, request: RollbackRequest, plan: DowngradePlan) -> str:
    """The strategy this rollback's backup is taken with: the one asked for, else the environment's default.

    A default of at-risk that cannot protect this plan (a step it could not quantify) falls back to the next
    strategy the environment accepts, a copy of the whole database; one asked for by name is never swapped.
    """
    env = rules.for_environment(request.environment)
    if request.backup_strategy:
        return request.backup_strategy
    strategy = env.default_backup_strategy
    if strategy == "at-risk" and not at_risk_scope(plan).sufficient:
        return next((s for s in env.backup_strategies if s != "at-risk"), strategy)
    return strategy


def _operator_rule(request: RollbackRequest) -> RuleResult:
    if not request.operator.strip():
        return RuleResult("operator", "fail", f"nobody is named as the operator, and who ran a {request.action} "
                          "must be recorded", f"pass operator (-p operator NAME: the person running this "
                          f"{request.action})")
    return RuleResult("operator", "pass", f"run by {request.operator.strip()}")


def _environment_rule(env: EnvironmentRules, name: str, source: str) -> RuleResult:
    if not env.rollback_allowed:
        return RuleResult("rollback allowed", "fail", f"{name} is forward-only without exceptions ({source})",
                          "no request can make this pass: restore from backup or fix forward with a new migration")
    if env.window_minutes is not None:
        return RuleResult("rollback allowed", "pass", f"{name} is forward-only by default; a rollback is an "
                          "exception allowed under the rules below")
    return RuleResult("rollback allowed", "pass", f"rollbacks are allowed in {name}")


def _window_rule(env: EnvironmentRules, name: str, request: RollbackRequest) -> RuleResult:
    deployed = request.deployed_at
    if deployed is not None and deployed > request.now:
        return RuleResult("deployment window", "fail",
                          f"deployed_at {deployed.isoformat()} is {_duration(deployed - request.now)} in the future",
                          "pass the time the migration was actually deployed, with its correct UTC offset "
                          "(-p deployed_at 2026-01-13T14:05:00Z)")
    if env.window_minutes is None:
        when = f" (deployed {_duration(request.now - deployed)} ago)" if deployed else ""
        return RuleResult("deployment window", "pass", f"no time limit in {name}{when}")
    limit = f"the {env.window_minutes}-minute window of {name}"
    if deployed is None:
        return RuleResult("deployment window", "fail",
                          f"deployed_at is not given, so {limit} cannot be checked",
                          "pass deployed_at (-p deployed_at 2026-01-13T14:05:00Z: the ISO 8601 time the "
                          "migration was deployed)")
    age = request.now - deployed
    if age.total_seconds() > env.window_minutes * 60:
        return RuleResult("deployment window", "fail",
                          f"deployed {_duration(age)} ago ({deployed.isoformat()}), past {limit}; new data may "
                          "already depend on the new schema",
                          f"past the window {name} is forward-only: fix forward with a new migration, or restore "
                          "from the backup taken before the migration")
    return RuleResult("deployment window", "pass", f"deployed {_duration(age)} ago, within {limit}")


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} days {hours % 24} h"


def _same_person(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def _approver_rule(env: EnvironmentRules, name: str, request: RollbackRequest) -> RuleResult:
    approver, operator = request.approved_by.strip(), request.operator.strip()
    if not approver:
        if env.require_approver:
            return RuleResult("approver", "fail", f"{name} requires explicit approval and nobody is named",
                              "have the team lead review the plan and pass approved_by (-p approved_by NAME)")
        return RuleResult("approver", "pass", f"no approval required in {name}")
    if env.approver_not_operator and operator and _same_person(approver, operator):
        return RuleResult("approver", "fail", f"{approver} would approve their own {request.action}",
                          "a second person (the team lead) must approve: pass their name (-p approved_by NAME)")
    if not operator:
        who = ""
    elif _same_person(approver, operator):
        who = f" (also the operator; allowed in {name})"
    else:
        who = f" (not the operator {operator})"
    required = "" if env.require_approver else f"; not required in {name}"
    return RuleResult("approver", "pass", f"approved by {approver}{who}{required}")


def _approved_plan_rule(env: EnvironmentRules, name: str, request: RollbackRequest,
                        plan: DowngradePlan) -> RuleResult:
    given = request.approved_plan.strip().lower()
    current = plan.plan_hash
    if not given:
        if env.require_approved_plan:
            return RuleResult("approved plan", "fail", f"{name} requires the approval to name the plan reviewed",
                              f"have the approver review this plan and pass its hash (-r approved_plan "
                              f"{current[:SHORT_HASH]})")
        return RuleResult("approved plan", "pass", "no plan hash given: the approval is not tied to a plan "
                          f"(optional in {name})")
    if len(given) < MIN_PLAN_PREFIX or any(c not in string.hexdigits for c in given):
        return RuleResult("approved plan", "fail",
                          f"approved_plan '{request.approved_plan.strip()}' is not a plan hash or a prefix of at "
                          f"least {MIN_PLAN_PREFIX} hex characters",
                          f"pass the plan hash the approver reviewed, as shown with the plan (-r approved_plan "
                          f"{current[:SHORT_HASH]} for this one)")
    if not current.startswith(given):
        return RuleResult("approved plan", "fail",
                          f"the plan changed since it was approved: approved {given[:SHORT_HASH]}, now "
                          f"{current[:SHORT_HASH]} (the database, the target or a migration file differs)",
                          f"have the approver review the current plan and approve it again (-r approved_plan "
                          f"{current[:SHORT_HASH]})")
    return RuleResult("approved plan", "pass", f"the plan is the one approved ({current[:SHORT_HASH]})")


def _risk_rule(env: EnvironmentRules, name: str, request: RollbackRequest, plan: DowngradePlan) -> RuleResult:
    # UNKNOWN, and anything the planner sends for review by hand, is treated as HIGH: never called safe.
    dangerous = [f"{s.revision.revision} ({s.migration_type}) {s.risk.value.upper()}"
                 for s in plan.steps if s.risk in (Risk.HIGH, Risk.UNKNOWN)]
    if plan.verdict.code == "review_by_hand":
        dangerous.append("the plan's verdict is REVIEW BY HAND (not everything was understood or counted)")
    if not dangerous:
        worst = max(plan.steps, key=lambda s: s.risk.rank, default=None)
        if worst is None:
            return RuleResult("risk", "pass", "no step to run")
        return RuleResult("risk", "pass", f"highest risk {worst.risk.value.upper()} "
                          f"({worst.revision.revision} {worst.migration_type}); no HIGH-risk step")
    listed = "; ".join(dangerous)
    if env.allow_high_risk == "never":
        override = " (accept_data_loss does not override this)" if request.accept_data_loss else ""
        return RuleResult("risk", "fail", f"{name} allows no HIGH-risk step{override}: {listed}",
                          f"no request can make this pass in {name}: restore from the backup taken before the "
                          "migration, or fix forward with a new migration")
    if request.accept_data_loss:
        return RuleResult("risk", "pass", f"HIGH-risk step(s) accepted with accept_data_loss: {listed}")
    return RuleResult("risk", "fail", f"HIGH-risk step(s) need accept_data_loss in {name}: {listed}",
                      "pass accept_data_loss (-p accept_data_loss True) if losing this data is acceptable; "
                      "otherwise restore from backup or fix forward")


def _atomic_rule(env: EnvironmentRules, name: str, request: RollbackRequest, plan: DowngradePlan) -> RuleResult:
    # A step that fails half-way outside a transaction leaves changes no rollback undoes: as bad as a HIGH risk,
    # so the same setting (allow_high_risk) governs it.
    steps = [f"{s.revision.revision} ({'; '.join(s.not_atomic_reasons)})" for s in plan.steps if not s.atomic]
    if not steps:
        return RuleResult("atomic steps", "pass", "every step runs in one transaction: a failure undoes all of it")
    listed = "; ".join(steps)
    if env.allow_high_risk == "never":
        override = " (accept_data_loss does not override this)" if request.accept_data_loss else ""
        return RuleResult("atomic steps", "fail", f"{name} allows no step that runs outside one transaction, which "
                          f"a failure would leave half-done{override}: {listed}",
                          f"no request can make this pass in {name}: restore from the backup taken before the "
                          "migration, or fix forward with a new migration")
    if request.accept_data_loss:
        return RuleResult("atomic steps", "pass", f"step(s) that run outside one transaction accepted with "
                          f"accept_data_loss: {listed}")
    return RuleResult("atomic steps", "fail", f"step(s) that run outside one transaction, which a failure would "
                      f"leave half-done, need accept_data_loss in {name}: {listed}",
                      "pass accept_data_loss (-p accept_data_loss True) if a half-done step is acceptable "
                      "(the backup taken first restores it); otherwise restore from backup or fix forward")


def _data_written_rule(env: EnvironmentRules, name: str, request: RollbackRequest,
                       plan: DowngradePlan) -> RuleResult:
    lost, uncounted = [], []
    for step in plan.steps:
        for op in step.operations:
            if op.check is None or op.check.effect != "lost":
                continue
            where = f"{step.revision.revision}: {op.detail}"
            if op.rows_affected is None:
                uncounted.append(f"{where} ({op.count_text()})")  # an estimate-only count keeps its estimate
            elif op.rows_affected > 0:
                lost.append(f"{where}: {op.count_text()}")
            elif op.changed_earlier_by:
                # Zero on today's data proves nothing when an earlier step changes the table first.
                uncounted.append(f"{where} (0 today, but step {op.changed_earlier_by} changes {op.table} first)")
    if not lost and not uncounted:
        return RuleResult("data written", "pass", "the live counts show no value the downgrade would destroy")
    facts = "; ".join(lost + uncounted)
    if env.allow_data_written == "always":
        return RuleResult("data written", "pass", f"allowed in {name}: {facts}")
    if env.allow_data_written == "never":
        if lost:
            return RuleResult("data written", "fail",
                              f"the downgrade would destroy or rewrite data that exists now, and {name} forbids "
                              f"rolling back after data has been written using the new schema: {facts}",
                              "keep the data: fix forward with a new migration, or restore from the backup taken "
                              "before the migration if losing it is intended")
        return RuleResult("data written", "fail",
                          f"rollbook cannot show that no data was written using the new schema: {facts}",
                          "plan again with live checks so every value is counted, or fix forward")
    if request.accept_data_loss:
        return RuleResult("data written", "pass", f"loss accepted with accept_data_loss: {facts}")
    return RuleResult("data written", "fail", f"the downgrade would destroy data written using the new schema: "
                      f"{facts}", "pass accept_data_loss (-p accept_data_loss True) if losing this data is "
                       "acceptable; otherwise fix forward")


def _blocking_rule(plan: DowngradePlan) -> RuleResult:
    blocking = [f"{step.revision.revision}: {op.described()}" for step in plan.steps for op in step.operations
                if op.fails]
    if blocking:
        # No fix of rows or objects helps a migration without downgrade(): only a backup or a new migration does.
        undoable = any(op.op == NO_DOWNGRADE for step in plan.steps for op in step.operations)
        remedy = ("restore from a backup taken before the upgrade, or fix forward with a new migration: those "
                  "revisions cannot be undone" if undoable else
                  "fix those rows or objects first and plan again, or restore from backup instead")
        return RuleResult("what blocks the downgrade", "fail",
                          f"the downgrade would fail part-way: {'; '.join(blocking)}", remedy)
    return RuleResult("what blocks the downgrade", "pass",
                      "no counted row and no object in the catalog would make the downgrade fail")


def _strategy_rule(env: EnvironmentRules, name: str, request: RollbackRequest, plan: DowngradePlan) -> RuleResult:
    accepted = env.backup_strategies
    strategy = request.backup_strategy or env.default_backup_strategy
    if strategy not in accepted:
        return RuleResult("backup strategy", "fail",
                          f"the {strategy} strategy is not accepted in {name} (accepted: {', '.join(accepted)})",
                          f"pass -p backup_strategy {accepted[0]}, or add {strategy} to backup_strategies in the "
                          f"policy of {name}")
    scope = at_risk_scope(plan) if strategy == "at-risk" else None
    if scope is not None and not scope.sufficient:
        # Never a partial copy: what the plan cannot pin down would be lost with no backup of it.
        others = [s for s in accepted if s != "at-risk"]
        why = f"the plan could not say exactly what it destroys ({'; '.join(scope.unquantified)})"
        if others and not request.backup_strategy:
            return RuleResult("backup strategy", "pass", f"at-risk (the default) cannot protect this downgrade: "
                              f"{why}; {others[0]}, the next strategy {name} accepts, is taken instead")
        remedy = (f"pass -p backup_strategy {others[0]} (a copy of the whole database)" if others else
                  f"add full to backup_strategies in the policy of {name}")
        return RuleResult("backup strategy", "fail", f"an at-risk backup cannot protect this downgrade: {why}",
                          remedy)
    how = "asked for" if request.backup_strategy else "the default"
    return RuleResult("backup strategy", "pass", f"{strategy} ({how}) is accepted in {name}")


def _backup_rule(env: EnvironmentRules, name: str, request: RollbackRequest,
                 backup_verified: bool | None) -> RuleResult:
    if not env.require_backup:
        state = {True: "a verified backup was taken", False: "the backup failed verification",
                 None: "no backup taken"}[backup_verified]
        return RuleResult("backup", "pass", f"not required in {name} ({state})")
    if backup_verified is True:
        return RuleResult("backup", "pass", "a backup taken by this run was verified")
    if backup_verified is False:
        return RuleResult("backup", "fail", "the backup taken by this run failed verification",
                          "take a backup that verifies (pg_dump, then a test restore) before any downgrade; "
                          "without one, do not roll back")
    if not request.execute:
        return RuleResult("backup", "pending", "dry run: no backup is written",
                          "run with execute to take and verify a backup before the downgrade")
    return RuleResult("backup", "pending", "no backup taken yet",
                      "rollbook takes and verifies a backup next; the policy is checked again afterwards")


def _rehearsal_rule(env: EnvironmentRules, name: str, request: RollbackRequest) -> RuleResult:
    if request.rehearse == "copy":
        return RuleResult("rehearsal", "pass", "the downgrade is rehearsed first on a restored copy of the database; "
                                               "a failed rehearsal stops the run before the real downgrade")
    if not env.require_rehearsal:
        return RuleResult("rehearsal", "pass", f"not required in {name} (no rehearsal asked for)")
    return RuleResult("rehearsal", "fail", f"{name} requires the downgrade rehearsed first on a restored copy "
                                           "of the database",
                      "run again with -p rehearse copy (the role needs CREATEDB and the server room for a copy)")
