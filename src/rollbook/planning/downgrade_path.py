"""Which revisions a downgrade to a target would undo, in order; or why it must not be attempted."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rollbook.errors import BadInput
from rollbook.project.migrations import MigrationProject

RELATIVE = re.compile(r"^-(\d+)$")
# Alembic's `BRANCH@TARGET`: BRANCH is a branch label (or a revision on the branch), TARGET `-N`, a revision or `base`.
ON_BRANCH = re.compile(r"^([^@\s]+)@(\S+)$")


@dataclass(frozen=True)
class DowngradePath:
    """The revisions to undo, newest first; each step goes from a revision to its parent."""

    current: tuple[str, ...]
    start: str
    target: str | None
    requested: str
    steps: tuple[str, ...]
    # Parents on the path that another head of the database stands on (a branch point): undoing their child
    # removes its row from the version table, as Alembic does, rather than moving it to the parent.
    shared_parents: tuple[str, ...] = ()

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
    on_branch = ON_BRANCH.match(requested)
    if on_branch:
        start, target_rev = _branch_target(project, current, on_branch.group(1), on_branch.group(2), requested)
    elif match:
        start, target_rev = _relative_target(project, current, int(match.group(1)), requested)
    elif requested == "base":
        start, target_rev = _single_current(project, current, requested), None
    else:
        target_rev = _resolve_revision(project, requested)
        start = _start_for(project, current, target_rev, requested)

    steps = _steps(project, start, target_rev)
    _refuse_undoing_other_heads(project, current, start, steps, requested)
    others = [ancestors(project, head) for head in current if head != start and project.has_file(head)]
    shared = tuple(parent for rev in steps for parent in _parents(project, rev) if any(parent in a for a in others))
    return DowngradePath(current=current, start=start, target=target_rev, requested=requested, steps=steps,
                         shared_parents=shared)


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


def alembic_downgrade_destination(project: MigrationProject, revision: str) -> str:
    """What to hand `alembic downgrade` to undo `revision` alone, its parent being the database's next revision.

    Alembic undoes every applied descendant of a plain target: from a branch point (keystone's initial revision,
    under its `expand` and `contract` branches) that is the other branch too, so the step names its branch
    (`revision@parent`).
    """
    parent = project.info(revision).down_revision or "base"
    if parent != "base" and "+" not in parent and project.script(parent).is_branch_point:
        return f"{revision}@{parent}"
    return parent


def _heads_in_words(project: MigrationProject, current: tuple[str, ...]) -> str:
    return ", ".join(f"{rev} (branch {', '.join(sorted(labels))})" if (labels := project.script(rev).branch_labels)
                     else rev for rev in current if project.has_file(rev))


def _branch_examples(project: MigrationProject, current: tuple[str, ...], spec: str = "-1") -> str:
    """`BRANCH@spec` for each head: its branch label, or the head itself where it has none."""
    names = [sorted(project.script(rev).branch_labels or {rev})[0] for rev in current if project.has_file(rev)]
    return " or ".join(f"{name}@{spec}" for name in names)


def _single_current(project: MigrationProject, current: tuple[str, ...], requested: str) -> str:
    if len(current) > 1:
        raise BadInput(
            f"The database is at several heads ({_heads_in_words(project, current)}), so '{requested}' is "
            f"ambiguous. Roll back one branch at a time and name it: {_branch_examples(project, current)} "
            "(BRANCH@-N, BRANCH@REVISION), or a revision on the branch (its id or a unique prefix)."
        )
    return current[0]


def _branch_target(
    project: MigrationProject, current: tuple[str, ...], branch: str, spec: str, requested: str
) -> tuple[str, str | None]:
    """The database's head on `branch` and the target `spec` names below it (`-N`, a revision, `base`)."""
    labels = _all_branch_labels(project)
    on_branch = [rev for rev in current if branch in (project.script(rev).branch_labels or ())]
    if branch not in labels:
        known = [script.revision for script in project.scripts.walk_revisions()]
        named = [rev for rev in known if rev.startswith(branch)]
        if len(named) != 1:
            raise BadInput(
                f"'{requested}' names '{branch}', which is neither a branch label of the project "
                f"({', '.join(sorted(labels)) or 'it has none'}) nor one revision's id or unique prefix. The database "
                f"is at {_heads_in_words(project, current)}: name its branch, e.g. "
                f"{_branch_examples(project, current)}.")
        on_branch = [rev for rev in current if rev == named[0] or named[0] in ancestors(project, rev)]
    if len(on_branch) != 1:
        found = "none" if not on_branch else ", ".join(on_branch)
        raise BadInput(
            f"'{requested}' names the branch '{branch}', but the database's head on it is {found} (the database "
            f"is at {_heads_in_words(project, current)}). Name one of its branches: "
            f"{_branch_examples(project, current)}.")
    start = on_branch[0]
    relative = RELATIVE.match(spec)
    if relative:
        return _relative_target(project, (start,), int(relative.group(1)), requested)
    if spec == "base":
        return start, None
    target = _resolve_revision(project, spec)
    if target != start and target not in ancestors(project, start):
        raise BadInput(
            f"Target {target} is not below the database's head {start} on branch '{branch}': '{requested}' cannot "
            "reach it by a downgrade. Name a revision between the branch's base and its head.")
    return start, target


def _all_branch_labels(project: MigrationProject) -> set[str]:
    return {label for script in project.scripts.walk_revisions() for label in script.branch_labels or ()}


def _refuse_undoing_other_heads(
    project: MigrationProject, current: tuple[str, ...], start: str, steps: tuple[str, ...], requested: str
) -> None:
    """Refuse a path that would undo a revision another of the database's heads stands on (a shared branch point):
    Alembic would pull that branch down with it."""
    for other in current:
        if other == start or not project.has_file(other):
            continue
        shared = [rev for rev in steps if rev in ancestors(project, other)]
        if shared:
            stop = shared[0]
            raise BadInput(
                f"'{requested}' would undo {stop}, which the database's other head "
                f"{_heads_in_words(project, (other,))} also stands on: Alembic would undo that branch with it. Stop "
                f"above it (name {stop} as the target on this branch, e.g. BRANCH@{stop}), or roll the other branch "
                "back first. Nothing was changed.")


def _relative_target(
    project: MigrationProject, current: tuple[str, ...], count: int, requested: str
) -> tuple[str, str | None]:
    start = _single_current(project, current, requested)
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
    below = tuple(rev for rev in current if target in ancestors(project, rev))
    if len(below) == 1:
        return below[0]
    if len(below) > 1:
        raise BadInput(
            f"Revision {target} lies below several of the database's heads ({_heads_in_words(project, below)}): a "
            "downgrade to it would undo more than one branch. Roll back one branch at a time and name it: "
            f"{_branch_examples(project, below, target)}."
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
