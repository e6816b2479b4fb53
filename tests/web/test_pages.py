"""Every page in the navigation, as the administrator (who sees them all) and as the operator: each loads with one
<h1>, the navigation and the sign-out button, no console error (the page fixture fails the test on any), no
serious or critical accessibility violation, and a screenshot kept."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from .browser import Watched, assert_accessible
from .harness import Console

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def nav_links(page: Watched) -> list[tuple[str, str]]:
    """(label, path) of every link in the console's navigation."""
    nav = page.page.get_by_role("navigation", name="Console")
    links = nav.get_by_role("link").all()
    return [(link.inner_text().strip(), str(link.get_attribute("href"))) for link in links]


def check_page(page: Watched) -> None:
    """What every signed-in page has: one h1, the navigation, the sign-out button; no axe violations."""
    p = page.page
    expect(p.locator("h1")).to_have_count(1)
    expect(p.get_by_role("navigation", name="Console")).to_be_visible()
    expect(p.get_by_role("button", name="Sign out")).to_be_visible()
    assert p.title().strip(), f"{p.url} has no title"
    assert_accessible(p)


@pytest.mark.parametrize("who", ["admin", "operator"])
def test_every_page_in_the_nav_loads_cleanly(
    page: Watched, console: Console, who: str, request: pytest.FixtureRequest
) -> None:
    operator = request.getfixturevalue(who)
    assert operator is page
    links = nav_links(page)
    labels = [label for label, _ in links]
    assert "Dashboard" in labels and len(links) >= 8, labels
    for label, href in links:
        response = page.goto(href)
        assert response is not None and response.status == 200, (label, href, response and response.status)
        # the link's page is the page marked current in the navigation
        current = page.page.get_by_role("navigation", name="Console").locator("[aria-current=page]")
        expect(current).to_have_text(label)
        check_page(page)
        assert not page.errors, page.errors  # say which page, not only at teardown


def test_the_sign_in_and_error_pages_pass_axe(page: Watched, console: Console) -> None:
    page.goto("/console/login")
    assert_accessible(page.page)
    page.goto("/console/no-such-page")
    # a 404 is a page of the console's; the browser logs the status of the document itself, and nothing else
    page.expect_errors(r"status of 404")
    expect(page.page.locator("h1")).to_have_count(1)
    assert_accessible(page.page)


def test_the_dashboard_shows_sales_alarms_the_outbox_and_a_chart(operator: Watched, console: Console) -> None:
    p, seeded = operator.page, console.seeded
    cards = p.get_by_role("region", name="Figures")
    today = cards.locator(".card", has=p.get_by_role("heading", name="Sales today"))
    vends_today = int(re.search(r"(\d+) vends", today.inner_text()).group(1))  # type: ignore[union-attr]
    assert vends_today >= len(seeded.vend_ids), today.inner_text()  # the seed's, and any a test made since
    alarms = cards.locator(".card", has=p.get_by_role("heading", name="Open alarms"))
    expect(alarms).to_contain_text("high")
    # the chart is drawn by uPlot from the page's own figures (a canvas, hidden from screen readers, which read the
    # table of the same figures instead)
    chart = p.locator("figure[data-chart] canvas")
    expect(chart.first).to_be_visible()
    expect(p.locator("figure[data-chart] > div[aria-hidden=true]")).to_have_count(1)
    p.get_by_text("The figures as a table").click()
    hours = p.locator("details table tbody tr")
    expect(hours).to_have_count(24)
    assert sum(int(c.inner_text()) for c in p.locator("details table tbody td.num").all()) >= len(seeded.vend_ids)
    operator.check("dashboard-table")
