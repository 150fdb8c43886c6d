"""What an at-risk backup saves, read from a plan without a database: each destroying operation becomes a piece, and
anything the plan could not pin down makes the backup insufficient, with the reason."""

from __future__ import annotations

from rollbook.planning.at_risk import AtRiskPiece, at_risk_scope
from rollbook.planning.downgrade_path import DowngradePath
from rollbook.planning.operations import LiveCheck, Operation, Risk, TableName
from rollbook.planning.plan import DowngradePlan
from rollbook.planning.step import PlanStep
from rollbook.planning.verdict import judge
from rollbook.project.migrations import RevisionInfo

USERS = TableName(None, "users")


def plan_of(*operations: Operation, live_checks: bool = True) -> DowngradePlan:
    step = PlanStep(RevisionInfo("r2", ("r1",), "m", "r2.py", "0" * 64), "data_migration", Risk.HIGH,
                    tuple(operations), (), None, None)
    return DowngradePlan("db", DowngradePath(("r2",), "r2", "r1", "-1", ("r2",)), (step,),
                         judge((step,), live_checks), (), live_checks)


def drop_column(rows: int | None = 5) -> Operation:
    return Operation("drop_column", USERS, "legacy", "drops column users.legacy", "ALTER TABLE users DROP legacy",
                     check=LiveCheck("non_null_values", USERS, ("legacy",)), risk=Risk.LOW, rows_affected=rows)


def test_each_destroying_operation_is_one_piece() -> None:
    delete = Operation("delete", USERS, None, "deletes rows of users where id > 3", "DELETE FROM users WHERE id > 3",
                       check=LiveCheck("matching_rows", USERS, predicate="id > 3"), risk=Risk.HIGH, rows_affected=2)
    update = Operation("update", USERS, None, "changes rows of users", "UPDATE users SET status = NULL",
                       check=LiveCheck("matching_rows", USERS, predicate="true"), risk=Risk.HIGH, rows_affected=9,
                       extra={"set_columns": ("status",)})
    scope = at_risk_scope(plan_of(drop_column(), delete, update))

    assert scope.sufficient
    assert scope.pieces == (
        AtRiskPiece("r2", USERS, "key_and_columns", ("legacy",), None, True, "drops column users.legacy"),
        AtRiskPiece("r2", USERS, "whole_rows", (), "id > 3", False, "deletes rows of users where id > 3"),
        AtRiskPiece("r2", USERS, "key_and_columns", ("status",), "true", False, "changes rows of users"),
    )


def test_nothing_counted_lost_is_nothing_to_save() -> None:
    assert at_risk_scope(plan_of(drop_column(rows=0))).pieces == ()


def test_what_the_plan_could_not_pin_down_makes_it_insufficient() -> None:
    bound = Operation("delete", USERS, None, "deletes rows of users", "DELETE FROM users WHERE id = $1",
                      risk=Risk.HIGH)
    unknown = Operation("unknown", None, None, "DO block: review by hand", "DO $$ ... $$")
    earlier = Operation("delete", USERS, None, "deletes rows of users where status IS NULL", "DELETE ...",
                        check=LiveCheck("matching_rows", USERS, predicate="status IS NULL"), risk=Risk.HIGH,
                        rows_affected=0, changed_earlier_by="r3")
    scope = at_risk_scope(plan_of(bound, unknown, earlier, drop_column(rows=None)))

    assert not scope.sufficient
    assert scope.unquantified == (
        "r2: deletes rows of users: which rows it changes is known only when it runs",
        "r2: DO block: review by hand: not understood (review by hand)",
        "r2: deletes rows of users where status IS NULL: step r3 changes users first, so the rows its condition "
        "reaches then may differ from those it reaches now",
        "r2: drops column users.legacy: not counted (live checks were not run)",
    )


def test_a_plan_without_live_checks_is_insufficient() -> None:
    assert "without live checks" in at_risk_scope(plan_of(drop_column(), live_checks=False)).unquantified[0]
