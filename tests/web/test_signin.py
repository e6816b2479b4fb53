"""Signing in and out of the console, and what it refuses: a wrong password (said next to the fields), a page
without a session (to the sign-in page, then back), a form POST without its CSRF token (403)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from .browser import Watched, assert_accessible
from .harness import Console, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_sign_in_wrong_password_then_right_then_sign_out(page: Watched, console: Console) -> None:
    p = page.page
    page.goto("/console/")
    expect(p).to_have_url(re.compile(r"/console/login"))  # no session: the sign-in page
    expect(p.get_by_role("heading", level=1)).to_have_text("Sign in")
    assert_accessible(p)

    p.get_by_label("Name").fill(console.operator.name)
    p.get_by_label("Password").fill(console.operator.password + "x")
    p.get_by_role("button", name="Sign in").click()
    error = p.get_by_role("alert")
    expect(error).to_be_visible()
    page.shot("wrong-password")
    page.expect_errors(r"status of 401")  # the form shown again, answered 401
    # the error is tied to the fields it concerns, for a screen reader too
    for label in ("Name", "Password"):
        field = p.get_by_label(label)
        expect(field).to_have_attribute("aria-invalid", "true")
        described = (field.get_attribute("aria-describedby") or "").split()
        assert error.get_attribute("id") in described, (label, described)
    expect(p.get_by_label("Name")).to_have_value(console.operator.name)  # kept, the password not
    expect(p.get_by_label("Password")).to_have_value("")
    assert console.operator.password not in p.content()
    assert_accessible(p)

    sign_in(page, console.operator)
    expect(p.get_by_role("heading", level=1)).to_have_text("Dashboard")
    expect(p.get_by_role("navigation", name="Console")).to_be_visible()
    p.get_by_role("button", name="Sign out").click()
    expect(p).to_have_url(re.compile(r"/console/login"))
    page.shot("signed-out")
    page.goto("/console/meters")  # the session is gone: a page asks for a sign-in again
    expect(p).to_have_url(re.compile(r"/console/login\?next=/meters"))


def test_sign_in_returns_to_the_page_asked_for(page: Watched, console: Console) -> None:
    p = page.page
    page.goto("/console/alarms")
    expect(p).to_have_url(re.compile(r"/console/login\?next=/alarms"))
    p.get_by_label("Name").fill(console.admin.name)
    p.get_by_label("Password").fill(console.admin.password)
    p.get_by_role("button", name="Sign in").click()
    expect(p).to_have_url(re.compile(r"/console/alarms$"))
    page.shot()


def test_a_post_without_its_csrf_token_is_refused(page: Watched, console: Console) -> None:
    """The session cookie alone does not make a POST: the form's csrf field must match the session's."""
    sign_in(page, console.operator)
    request = page.page.context.request  # the browser's cookies, no form of the console's
    forms: list[tuple[str, dict[str, str | float | bool]]] = [
        ("/console/logout", {}),
        ("/console/logout", {"csrf": "not-the-token"}),
        ("/console/vend", {"meter": console.seeded.vend_meter, "amount": "50.00"}),
    ]
    for path, form in forms:
        answer = request.post(console.url(path), form=form, max_redirects=0)
        assert answer.status == 403, (path, form, answer.status, answer.text()[:300])
    # the session survived the refused sign-out
    page.goto("/console/")
    expect(page.page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    # and the sign-in form, without a session, has its own: a POST without it is refused too
    anonymous = page.page.context.browser.new_context()  # type: ignore[union-attr]
    try:
        answer = anonymous.request.post(
            console.url("/console/login"),
            form={"name": console.operator.name, "password": console.operator.password},
            max_redirects=0,
        )
        assert answer.status == 403, answer.status
        assert not any(c["name"].startswith(("mita_console", "__Host-")) for c in anonymous.cookies())
    finally:
        anonymous.close()


def test_keyboard_only_sign_in_and_skip_link(page: Watched, console: Console) -> None:
    """Without a mouse: the name field has the focus, Tab moves to the password, Enter signs in; the first Tab
    on a page reaches the skip link, which moves the focus past the navigation to the page's content."""
    p = page.page
    page.goto("/console/login")
    expect(p.get_by_label("Name")).to_be_focused()
    p.keyboard.type(console.operator.name)
    p.keyboard.press("Tab")
    expect(p.get_by_label("Password")).to_be_focused()
    p.keyboard.type(console.operator.password)
    p.keyboard.press("Enter")
    expect(p.get_by_role("heading", level=1)).to_have_text("Dashboard")
    p.keyboard.press("Tab")
    skip = p.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()  # shown when it has the focus
    page.shot("skip-link")
    p.keyboard.press("Enter")
    expect(p.locator("main")).to_be_focused()
