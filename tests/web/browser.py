"""The browser side of the console's tests: Debian's Chromium under Playwright, a watched page, axe-core.

Chromium is Debian's (``/usr/bin/chromium``, installed by ``make chromium``), never one Playwright downloads: a
missing browser fails the tests with that instruction, it does not skip them. The launch flags keep a headless
Chromium quiet on a machine without a network (no background fetches, no component updates, no QUIC probes).

:class:`Watched` wraps one test's page: every console message of type ``error`` and every uncaught page error is
recorded (the fixture fails the test at teardown if there were any), and :meth:`Watched.shot` saves a numbered
screenshot under ``tests/web/artifacts/<test>/``. :func:`axe_violations` runs the vendored axe-core
(``vendor/axe.min.js``, MPL-2.0, a test-only asset) in the page and returns what is serious or critical.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import ConsoleMessage, Error, Page, Response

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE / "artifacts"
AXE_JS = HERE / "vendor" / "axe.min.js"
#: the impacts that fail a page (axe's scale: minor, moderate, serious, critical)
FAILING_IMPACTS = ("serious", "critical")
#: the tags of the rules run: WCAG 2.0, 2.1 and 2.2 A and AA, and axe's best practices
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]


def missing_chromium() -> str | None:
    """Why the browser tests cannot run, or None."""
    if not CHROMIUM.exists():
        return (
            f"Debian's Chromium is not installed ({CHROMIUM} is missing): run `make chromium` "
            "(the browser tests never download a browser, and never skip without one)"
        )
    return None


def slug(text: str) -> str:
    """A file name's part from a test id or a page's path."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:80] or "page"


@dataclass
class Watched:
    """One test's page with what it logged: console errors, page errors, failed responses; its screenshots."""

    page: Page
    folder: Path
    base_url: str
    secrets: dict[str, str] = field(default_factory=dict)  # what must never be in a page: label -> text
    errors: list[str] = field(default_factory=list)
    shots: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("console", self._console)
        self.page.on("pageerror", self._page_error)
        self.page.on("response", self._response)

    # ------------------------------------------------------------------ what the page says

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            where = message.location.get("url", "") if message.location else ""
            self.errors.append(f"console error on {self.page.url}: {message.text} ({where})")

    def _page_error(self, error: Error) -> None:
        self.errors.append(f"page error on {self.page.url}: {error.message}")

    def _response(self, response: Response) -> None:
        """A 5xx from the console is an error even when the page shows it politely."""
        if response.status >= 500 and response.url.startswith(self.base_url):
            self.errors.append(f"HTTP {response.status} for {response.request.method} {response.url}")

    # ------------------------------------------------------------------ moving and keeping

    def goto(self, path: str) -> Response | None:
        """Open a console path (``/console/...``) and keep a screenshot of it."""
        response = self.page.goto(self.base_url + path)
        self.shot()
        return response

    def shot(self, name: str | None = None, *, full_page: bool = True) -> Path:
        """Save ``<n>-<name>.png`` (the name defaults to the page's path) in the test's folder."""
        if name is None:
            path = self.page.url.removeprefix(self.base_url).split("?")[0]
            name = path.removeprefix("/console").strip("/") or "dashboard"
        self.no_secrets()
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"{len(self.shots) + 1:02d}-{slug(name)}.png"
        self.page.screenshot(path=str(target), full_page=full_page)
        self.shots.append(target)
        return target

    def no_secrets(self) -> None:
        """The page as it is now holds none of the secrets (keys in hex, either case; passwords), by label."""
        html = self.page.content().lower()
        found = [label for label, text in self.secrets.items() if text.lower() in html]
        assert not found, f"{self.page.url} shows {', '.join(found)}"

    def check(self, name: str | None = None) -> Path:
        """A page reached by a click (not :meth:`goto`): its screenshot, and axe's check of it."""
        shot = self.shot(name)
        assert_accessible(self.page)
        return shot

    def expect_errors(self, *patterns: str) -> list[str]:
        """Take the errors matching each pattern (each must match one at least), leaving the rest for teardown.

        Chromium logs a document answered with a 4xx as a console error ("Failed to load resource: ... 401"):
        a form shown again with what was wrong is such a page, so a test that provokes one says so here."""
        taken = []
        for pattern in patterns:
            hits = [e for e in self.errors if re.search(pattern, e)]
            assert hits, f"expected an error matching {pattern!r}; the page logged {self.errors}"
            taken += hits
            self.errors[:] = [e for e in self.errors if e not in hits]
        return taken

    def take_errors(self) -> list[str]:
        """The errors so far, forgotten (a test that provokes one on purpose checks and clears it)."""
        taken, self.errors[:] = list(self.errors), []
        return taken


# ---------------------------------------------------------------------- accessibility


def axe_violations(page: Page, impacts: tuple[str, ...] = FAILING_IMPACTS) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now, those of the given impacts."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        # evaluated, not added as a <script>: the console's Content-Security-Policy (script-src 'self') refuses an
        # inline script tag, and that refusal would itself be a console error; an evaluation is not subject to it
        page.evaluate(AXE_JS.read_text(encoding="utf-8") + "\n;undefined")
    result = page.evaluate(
        "async (tags) => await window.axe.run(document, "
        "{runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})",
        AXE_TAGS,
    )
    return [v for v in result["violations"] if v.get("impact") in impacts]


def describe(violations: list[dict[str, Any]], url: str) -> str:
    """The violations, readably: rule, impact, what it means, where (a few elements each) and how to fix."""
    lines = [f"{len(violations)} serious or critical accessibility violation(s) on {url}:"]
    for v in violations:
        lines.append(f"- [{v['impact']}] {v['id']}: {v['help']} ({v['helpUrl']})")
        for node in v["nodes"][:5]:
            target = " ".join(json.dumps(t) if not isinstance(t, str) else t for t in node.get("target", []))
            lines.append(f"    at {target}: {node.get('html', '')[:160]}")
            summary = (node.get("failureSummary") or "").replace("\n", " ")
            if summary:
                lines.append(f"      {summary[:300]}")
        if len(v["nodes"]) > 5:
            lines.append(f"    ... and {len(v['nodes']) - 5} more element(s)")
    return "\n".join(lines)


def assert_accessible(page: Page) -> None:
    """Fail, listing them, if axe finds serious or critical violations on the page."""
    found = axe_violations(page)
    assert not found, describe(found, page.url)
