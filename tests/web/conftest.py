"""The console's browser tests: one seeded server and worker for the session, a watched Chromium page per test.

The server is what an installation runs: ``mita serve`` on a free loopback port over a fresh SQLite file, and
``mita worker`` beside it (campaigns are generated as outbox jobs), both as processes with their logs kept in
``tests/web/artifacts/_server/``. The utility is :mod:`.seed`'s; the console's operators are made the way an
administrator makes them, with ``mita console user add NAME --role ROLE --password-stdin``.

Every test gets a fresh browser context (no cookies carried over) and a :class:`~.browser.Watched` page. At
teardown the test fails if the page logged a console error or an uncaught error, or if the server or the worker
logged a traceback while it ran. Screenshots of every page visited are kept under ``tests/web/artifacts/<test>/``.

Debian's Chromium is required: without ``/usr/bin/chromium`` every test here fails saying to run
``make chromium`` (never a silent skip, never a browser download).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Playwright, expect, sync_playwright

from .browser import ARTIFACTS, CHROMIUM, LAUNCH_ARGS, Watched, missing_chromium, slug
from .harness import Console, sign_in, start

#: A page's actions and its assertions wait as long: ``expect`` keeps its own 5 s default otherwise, which a sign-in
#: (a scrypt check) on a loaded machine can pass.
TIMEOUT_MS = 10_000
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="session")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """The seeded console server and its worker, for the whole session."""
    with start(tmp_path_factory.mktemp("console")) as running:
        yield running


# ---------------------------------------------------------------------- the browser


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def chromium(playwright_driver: Playwright) -> Iterator[Browser]:
    """Debian's Chromium, headless; a failure (not a skip) saying ``make chromium`` when it is missing."""
    why = missing_chromium()
    if why:
        pytest.fail(why, pytrace=False)
    browser = playwright_driver.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def page(chromium: Browser, console: Console, request: pytest.FixtureRequest) -> Iterator[Watched]:
    """A watched page in a fresh context: at teardown the test fails on any console or page error, or on a
    traceback in the server's or worker's log while it ran."""
    folder = ARTIFACTS / slug(request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, locale="en-ZA")
    context.set_default_timeout(TIMEOUT_MS)
    sizes = console.log_sizes()
    watched = Watched(context.new_page(), folder, console.base_url, secrets=console.secrets)
    try:
        yield watched
    finally:
        context.close()
    problems = list(watched.errors) + console.tracebacks_since(sizes)
    if problems:
        pytest.fail("the page or the server logged errors:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def admin(page: Watched, console: Console) -> Watched:
    """The page, signed in as the administrator."""
    sign_in(page, console.admin)
    return page


@pytest.fixture
def operator(page: Watched, console: Console) -> Watched:
    """The page, signed in as the operator."""
    sign_in(page, console.operator)
    return page
