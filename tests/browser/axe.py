"""axe-core, the accessibility checker, run inside pages under test.

``axe-core`` is fetched unmodified from the npm registry (pinned, cached: see
``npm_package.py``); ``scripts/run-tests.sh`` fetches it before the tests' loopback-only
namespace by running this file. :func:`serious_violations` injects it into a
Playwright page and returns the violations axe rates ``serious`` or ``critical``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/browser, run as a script
from npm_package import InstallFailed, ensure_package  # noqa: E402

PACKAGE = "axe-core"
VERSION = "4.10.3"  # pinned: rule sets change between versions
SCRIPT = "axe.min.js"
SERIOUS = ("serious", "critical")

__all__ = ["InstallFailed", "axe_script", "serious_violations"]


def axe_script() -> Path:
    """The path of ``axe.min.js``, installing axe-core first if needed."""
    return ensure_package(PACKAGE, VERSION, SCRIPT) / SCRIPT


_RUN_JS = """async () => {
  const results = await window.axe.run(document, {resultTypes: ["violations"]});
  return results.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map((n) => ({target: n.target, summary: n.failureSummary})),
  }));
}"""


async def serious_violations(page: Any) -> list[dict[str, Any]]:
    """axe's serious and critical violations on ``page`` as it is now (each with its
    rule ``id``, ``impact``, ``help`` and the offending ``nodes``)."""
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        await page.add_script_tag(content=axe_script().read_text())
    violations: list[dict[str, Any]] = await page.evaluate(_RUN_JS)
    return [v for v in violations if v["impact"] in SERIOUS]


if __name__ == "__main__":
    try:
        print(axe_script())
    except InstallFailed as exc:
        sys.exit(str(exc))
