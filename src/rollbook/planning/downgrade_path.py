"""Which revisions a downgrade to a target would undo, in order; or why it must not be attempted."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rollbook.errors import BadInput
from rollbook.project.migrations import MigrationProject

RELATIVE = re.compile(r"^-(\d+)$")


@dataclass(frozen=True)
class DowngradePath:
    """The revisions to undo, newest first; each step goes from a revision to its parent."""

    current: tuple[str, ...]
    start: str
    target: str | None
    requested: str
    steps: tuple[str, ...]

    @property
    def target_label(self) -> str:
        return self.target or "base"


def resolve_downgrade_path(project: MigrationProject, current: tuple[str, ...], target: str) -> DowngradePath:
    """Resolve `target` (`-N`, a revision id or unique prefix, or `base`) against the database's revisions."""
    requested = str(target).strip()
    if not current:
        raise BadInput(
            "The database has no applied revision (its version table is empty): there is nothing to roll back. "
            "Check that the URL names the right database."
        )
    project.refuse_if_no_migrations(current)
    missing = [rev for rev in current if not project.has_file(rev)]
    if missing:
        raise BadInput(
            f"Can't locate the migration file for the database's current revision {missing[0]}: its downgrade() "
            f"is unknown, so no rollback can be planned. Restore the file from version control "
            f"(git log --all -- '*{missing[0]}*' finds it; git checkout <commit> -- <path> brings it back), "
            "then retry. Nothing was changed."
        )

    match = RELATIVE.match(requested)
    if match:
        start, target_rev = _relative_target(project, current, int(match.group(1)), requested)
    elif requested == "base":
        start, target_rev = _single_current(current, requested), None
    else:
        target_rev = _resolve_revision(project, requested)
        start = _start_for(project, current, target_rev, requested)

    steps = _steps(project, start, target_rev)
    return DowngradePath(current=current, start=start, target=target_rev, requested=requested, steps=steps)


def ancestors(project: MigrationProject, revision: str) -> set[str]:
    """Every revision `revision` depends on through down_revision, not including itself."""
    seen: set[str] = set()
    stack = list(_parents(project, revision))
    while stack:
        rev = stack.pop()
        if rev not in seen:
            seen.add(rev)
            stack.extend(_parents(project, rev))
    return seen


def _parents(project: MigrationProject, revision: str) -> tuple[str, ...]:
    down = project.script(revision).down_revision
    if down is None:
        return ()
    return (down,) if isinstance(down, str) else tuple(down)


def _single_current(current: tuple[str, ...], requested: str) -> str:
    if len(current) > 1:
        raise BadInput(
            f"The database is at several heads ({', '.join(current)}), so '{requested}' is ambiguous. "
            "Name a revision on the branch to roll back (its id or a unique prefix), or merge the heads first."
        )
    return current[0]


def _relative_target(
    project: MigrationProject, current: tuple[str, ...], count: int, requested: str
) -> tuple[str, str | None]:
    start = _single_current(current, requested)
    if count == 0:
        return start, start
    rev: str | None = start
    for taken in range(count):
        if rev is None:
            raise BadInput(
                f"Cannot go back {count} revisions: the database is only {taken} revision(s) above base. "
                f"Use -{taken} or 'base'."
            )
        parents = _parents(project, rev)
        if len(parents) > 1:
            raise BadInput(
                f"Going back {count} revision(s) from {start} crosses the merge revision {rev}, whose parents "
                f"are {', '.join(parents)}. Name the target revision explicitly."
            )
        rev = parents[0] if parents else None
    return start, rev


def _resolve_revision(project: MigrationProject, requested: str) -> str:
    known = [script.revision for script in project.scripts.walk_revisions()]
    if requested in ("head", "heads"):
        heads = project.heads()
        if len(heads) != 1:
            raise BadInput(f"The project has several heads ({', '.join(heads)}): name one of them.")
        return heads[0]
    if requested in known:
        return requested
    candidates = sorted(rev for rev in known if rev.startswith(requested))
    if not candidates:
        raise BadInput(
            f"Can't locate revision '{requested}': no migration file has that id or prefix. Check the id "
            "(rollbook status lists the revisions), or restore the missing migration file from version control."
        )
    if len(candidates) > 1:
        raise BadInput(
            f"Revision prefix '{requested}' is ambiguous: it matches {', '.join(candidates)}. "
            "Give more characters of the revision id."
        )
    return candidates[0]


def _start_for(project: MigrationProject, current: tuple[str, ...], target: str, requested: str) -> str:
    if target in current:
        return target
    below = [rev for rev in current if target in ancestors(project, rev)]
    if len(below) == 1:
        return below[0]
    if len(below) > 1:
        raise BadInput(
            f"Revision {target} lies below several of the database's heads ({', '.join(below)}): a downgrade "
            "to it would undo more than one branch. Roll back one branch at a time, naming a revision on it."
        )
    if any(rev in ancestors(project, target) for rev in current):
        raise BadInput(
            f"Target {target} is ahead of the database (now at {', '.join(current)}): a downgrade cannot reach it. "
            "To move forward use alembic upgrade; to roll back, name a revision below the current one (e.g. -1)."
        )
    raise BadInput(
        f"Target {target} is not an ancestor of the database's current revision ({', '.join(current)}): it lies "
        "on another branch. Name a revision between base and the current revision."
    )


def _steps(project: MigrationProject, start: str, target: str | None) -> tuple[str, ...]:
    if target == start:
        return ()
    keep = ancestors(project, target) | {target} if target else set()
    undo = (ancestors(project, start) | {start}) - keep
    ordered = [s.revision for s in project.scripts.iterate_revisions(start, target or "base") if s.revision in undo]
    return tuple(ordered)
