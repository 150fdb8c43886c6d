"""`rollbook init`: a team's own procedures site and settings, as `alembic init` and `mkdocs new` write theirs.

The folder gets a rollbook.toml (the policy of each environment, rollbook's defaults commented; where the
records are filed; never a password), an mkdocs.yml that uses the `rollbook` plugin with the Material theme,
and the procedure pages as Markdown the team owns and edits (rollbook's own pages that teach the procedure,
shipped in the package). Running it again writes only what is missing: a file that exists is kept, and
one that differs from what init would write is named as skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rollbook.policy.rules import default_policy

# rollbook's own procedure pages (its docs/, shipped as rollbook/website/procedures/): every page but the
# architecture of rollbook's code, which is not the team's procedure.
PROCEDURES = Path(__file__).parent / "procedures"
PROCEDURE_PAGES = (
    "index.md", "safety.md", "status.md", "risks.md", "rolling-back.md", "verifying.md", "checklist.md",
    "recovery.md", "examples.md", "policy.md", "testing.md", "real-projects.md", "records.md",
    "reference/configuration.md", "reference/cli.md",
)

MKDOCS_YML = """\
# The team's rollback procedures as a site: `mkdocs build --strict` (written by `rollbook init`; yours to edit).
# The rollbook plugin adds a page for every runbook (rollbook's own, and the notebooks of runbooks/ here) and
# for every run filed in the archive (ROLLBOOK_ARCHIVE, default ./rollback-records), with an index that says
# whether the archive's manifest verifies; the build fails if any page would show a password.
site_name: Rollback procedures
docs_dir: docs
site_dir: site
strict: true

theme:
  name: material
  # No web fonts: the site must read the same offline, behind a firewall, during an incident.
  font: false
  features:
    - navigation.indexes
    - navigation.footer
    - navigation.top
    - content.tabs.link
    - content.code.copy
    - search.highlight

plugins:
  - search
  - rollbook
  # With its settings (these are the defaults):
  # - rollbook:
  #     archive: rollback-records    # the folder of run records; false for none
  #     runbooks: [bundled, runbooks]   # rollbook's runbooks, then this folder's own notebooks
  #     titles: {}                      # page titles by runbook name: {rollback: Roll back a release}
  #     cache_dir: .cache/rollbook      # rendered record pages kept between builds (keep it out of git)

validation:
  # A link to a runbook section that does not exist fails the strict build.
  anchors: warn

markdown_extensions:
  - admonition
  - attr_list
  - md_in_html
  - tables
  - toc:
      permalink: true
  - pymdownx.details
  - pymdownx.highlight
  - pymdownx.inlinehilite
  - pymdownx.superfences
  - pymdownx.tabbed:
      alternate_style: true
  - pymdownx.tasklist:
      custom_checkbox: true

nav:
  - Overview: index.md
  - Before you roll back:
      - When rollback is safe: safety.md
      - Check the status: status.md
      - Data-loss risk by migration type: risks.md
  - Rolling back:
      - Roll back: rolling-back.md
      - Verify: verifying.md
      - The checklist: checklist.md
      - Recovery: recovery.md
      - Worked examples: examples.md
  - Policy: policy.md
  - Testing rollbacks: testing.md
  - Using rollbook with real projects: real-projects.md
  - Records: records.md
  - Runbooks:
      - runbooks/index.md
  - Archive:
      - archive/index.md
  - Reference:
      - Configuration: reference/configuration.md
      - Command line: reference/cli.md
"""


@dataclass(frozen=True)
class InitResult:
    """What `rollbook init` did with each file, by path relative to the folder."""

    written: tuple[str, ...]
    unchanged: tuple[str, ...]  # already there, as init writes it
    skipped: tuple[str, ...]  # already there and different: the team's, kept


def init_site(folder: Path) -> InitResult:
    """Write the team's rollbook.toml, mkdocs.yml and procedure pages into `folder`; never overwrite a file."""
    written: list[str] = []
    unchanged: list[str] = []
    skipped: list[str] = []
    for name, content in team_files().items():
        path = folder / name
        if path.exists():
            same = path.is_file() and path.read_bytes() == content.encode("utf-8")
            (unchanged if same else skipped).append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(name)
    return InitResult(tuple(written), tuple(unchanged), tuple(skipped))


def team_files() -> dict[str, str]:
    """Every file init writes, by path relative to the team's folder, with its content."""
    files = {"rollbook.toml": rollbook_toml(), "mkdocs.yml": MKDOCS_YML}
    for page in PROCEDURE_PAGES:
        files[f"docs/{page}"] = (PROCEDURES / page).read_text(encoding="utf-8")
    return files


def rollbook_toml() -> str:
    """The settings file: each environment's policy with rollbook's defaults commented out, and the archive."""
    lines = [
        "# rollbook's settings for this project (written by `rollbook init`; yours to edit). rollbook finds this",
        "# file from the Alembic project's folder upwards, up to the repository's root.",
        "#",
        "# Never write a password here, nor in mkdocs.yml or a runbook parameter. Each run finds its database as",
        "# the DATABASE_URL of its environment (or --database-url), without the password:",
        "#   export DATABASE_URL=postgresql+psycopg://app@db.internal/app",
        "# and the password from PGPASSWORD, ~/.pgpass or a service file (PGSERVICE).",
        "",
        "# The rollback policy of each environment, chosen by a run's `-p environment NAME`. The keys are",
        "# commented at rollbook's defaults: uncomment one to change its rule. A new environment starts from",
        "# production's rules, or from those of `based_on`. See the site's Policy page.",
    ]
    for name, rules in default_policy().environments.items():
        lines += ["", f"[policy.{name}]"]
        for key, value in rules.to_dict().items():
            # TOML has no null: a rule switched off (the window) is false.
            lines.append(f"# {key} = {json.dumps(False if value is None else value)}")
    lines += [
        "",
        "# The archive: every run files its record in ROLLBOOK_ARCHIVE (default ./rollback-records, from the",
        "# folder the run starts in), and mkdocs.yml's rollbook plugin publishes that folder on the site.",
        "# Signing each entry of the archive's manifest (paths relative to this file):",
        "[archive]",
        '# signing_key = "keys/rollbook_ed25519"    # an SSH key, or the .pub of a key in ssh-agent',
        '# allowed_signers = "keys/allowed_signers"  # whose signatures `rollbook archive verify` accepts',
        "",
    ]
    return "\n".join(lines)
