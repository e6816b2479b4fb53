"""The harness's own checks can fail: a console error, an uncaught error, a failed asset and an inaccessible page are
each caught, and a missing Chromium is a failure naming ``make chromium``. No server needed: pages are set here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from . import browser
from .browser import Watched, assert_accessible, axe_violations

pytestmark = [pytest.mark.browser]

CLEAN = """<!doctype html><html lang="en"><head><title>Clean</title></head>
<body><main><h1>Clean</h1><p>Nothing wrong here.</p></main></body></html>"""
PLANTED = """<!doctype html><html lang="en"><head><title>Planted</title></head>
<body><main><h1>Planted</h1><img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">
<label>Amount <input id="a"></label><input id="unlabelled"></main></body></html>"""


@pytest.fixture
def scratch(chromium: Browser, tmp_path: Path) -> Iterator[Watched]:
    context = chromium.new_context()
    try:
        yield Watched(context.new_page(), tmp_path / "shots", "http://scratch.invalid")
    finally:
        context.close()


def _until_recorded(watched: Watched, text: str, timeout_ms: int = 10_000) -> None:
    """Wait (pumping the page's events) until an error with ``text`` was recorded: an event crosses from the
    renderer to the driver to Python, which a fixed wait does not bound on a loaded machine."""
    for _ in range(timeout_ms // 50):
        if any(text in e for e in watched.errors):
            return
        watched.page.wait_for_timeout(50)


def test_console_errors_and_uncaught_errors_are_recorded(scratch: Watched) -> None:
    scratch.page.set_content(CLEAN)
    assert scratch.errors == []
    scratch.page.evaluate("console.error('a planted console error')")
    scratch.page.evaluate("setTimeout(() => { throw new Error('a planted uncaught error') }, 0)")
    _until_recorded(scratch, "a planted uncaught error")
    errors = scratch.take_errors()
    assert any("a planted console error" in e for e in errors), errors
    assert any("a planted uncaught error" in e for e in errors), errors
    assert scratch.errors == []


def test_a_missing_asset_is_a_console_error(scratch: Watched) -> None:
    scratch.page.route("http://scratch.invalid/**", lambda route: route.fulfill(status=404, body="gone"))
    scratch.page.set_content('<html lang="en"><head><title>t</title></head><body>'
                             '<script src="http://scratch.invalid/app.js"></script></body></html>')  # fmt: skip
    _until_recorded(scratch, "404")
    assert any("404" in e for e in scratch.take_errors())


def test_axe_finds_a_planted_violation_and_passes_a_clean_page(scratch: Watched) -> None:
    scratch.page.set_content(PLANTED)
    found = {v["id"] for v in axe_violations(scratch.page)}
    assert {"image-alt", "label"} <= found, found
    with pytest.raises(AssertionError, match=r"\[critical\] image-alt") as failed:
        assert_accessible(scratch.page)
    assert "#unlabelled" in str(failed.value)  # the report says where
    scratch.page.set_content(CLEAN)
    assert_accessible(scratch.page)


def test_screenshots_are_numbered_in_the_tests_folder(scratch: Watched) -> None:
    scratch.page.set_content(CLEAN)
    first, second = scratch.shot("one"), scratch.shot("two")
    assert [first.name, second.name] == ["01-one.png", "02-two.png"]
    assert first.read_bytes().startswith(b"\x89PNG")


def test_a_missing_chromium_fails_saying_make_chromium(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(browser, "CHROMIUM", tmp_path / "no-chromium")
    why = browser.missing_chromium()
    assert why is not None and "make chromium" in why and "no-chromium" in why


def test_a_page_showing_a_secret_fails_naming_it(scratch: Watched) -> None:
    scratch.secrets = {"the test key": "ABABABABABABABAB"}
    scratch.page.set_content(CLEAN)
    scratch.shot("clean")
    scratch.page.set_content(CLEAN.replace("Nothing wrong here.", "key abababababababab"))
    with pytest.raises(AssertionError, match="shows the test key"):
        scratch.shot("leaky")
