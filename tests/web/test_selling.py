"""A utility's counter work in the browser: find a meter, vend to it (quote, then confirm), print the receipt,
reprint it, reverse the vend; issue a clear-tamper engineering token. Every page reached is screenshot and checked
by axe; a console error anywhere fails the test (the page fixture)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from .browser import Watched
from .harness import Console

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TOKEN = re.compile(r"^\d{4} \d{4} \d{4} \d{4} \d{4}$")


def field_error(p: Page, label: str) -> str:
    """The error shown next to a field, found the way a screen reader finds it: the field's aria-describedby."""
    field = p.get_by_label(label, exact=True)
    expect(field).to_have_attribute("aria-invalid", "true")
    ids = (field.get_attribute("aria-describedby") or "").split()
    errors = [p.locator(f"#{i}") for i in ids if i.endswith("-error")]
    assert errors, f"the field {label!r} is invalid but no error is tied to it ({ids})"
    expect(errors[0]).to_be_visible()
    return errors[0].inner_text()


def test_find_a_meter_by_customer_by_number_and_by_area(operator: Watched, console: Console) -> None:
    p, seeded = operator.page, console.seeded
    p.get_by_role("navigation", name="Console").get_by_role("link", name="Meters").click()
    operator.check("meters")
    search = p.get_by_label("Meter number, customer name or account")
    search.fill(seeded.search_customer.split()[0])  # a first name
    p.get_by_role("button", name="Find").click()
    rows = p.locator("table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(seeded.search_customer)
    operator.check("found-by-name")

    search.fill(seeded.search_meter[:8])  # the start of a number
    p.get_by_role("button", name="Find").click()
    expect(p.get_by_role("link", name=seeded.search_meter)).to_be_visible()

    search.fill("")
    p.get_by_label("Area").select_option("north")
    p.get_by_role("button", name="Find").click()
    north = [d for d, a in seeded.areas.items() if a == "north"]
    expect(rows).to_have_count(len(north) + sum(a == "north" for a in _rollover_areas(seeded.rollover_meters)))
    for cell in p.locator("table tbody tr td:nth-child(3)").all():
        assert cell.inner_text().strip() == "north"
    # the table sorts by a column when its header is pressed, and says so to a screen reader
    sort_by_meter = p.get_by_role("button", name=re.compile(r"^Meter\b"))  # its name gains the sort's arrow
    sort_by_meter.click()
    header = p.locator("table thead th").first
    expect(header).to_have_attribute("aria-sort", "ascending")
    shown = [c.inner_text().strip() for c in p.locator("table tbody tr td:nth-child(1)").all()]
    assert shown == sorted(shown)
    sort_by_meter.click()
    expect(header).to_have_attribute("aria-sort", "descending")
    shown = [c.inner_text().strip() for c in p.locator("table tbody tr td:nth-child(1)").all()]
    assert shown == sorted(shown, reverse=True)
    operator.check("north-sorted")

    search.fill(seeded.search_meter)
    p.get_by_label("Area").select_option("")
    p.get_by_role("button", name="Find").click()
    p.get_by_role("link", name=seeded.search_meter).click()
    expect(p.get_by_role("heading", level=1)).to_have_text(f"Meter {seeded.search_meter}")
    expect(p.locator("dl.facts")).to_contain_text(seeded.search_customer)
    expect(p.locator("dl.facts")).to_contain_text("supply group 123456, KRN 1")
    operator.check("meter")


def _rollover_areas(drns: list[str]) -> list[str]:
    from .seed import AREAS

    return [AREAS[i % 2] for i in range(len(drns))]


def test_vend_print_reprint_and_reverse(operator: Watched, console: Console) -> None:
    p, meter = operator.page, console.seeded.vend_meter
    operator.goto("/console/vend")
    # what is wrong is said next to the field
    p.get_by_label("Meter number").fill(meter)
    p.get_by_label("Amount paid").fill("fifty")
    p.get_by_role("button", name="Quote").click()
    assert "number" in field_error(p, "Amount paid")
    operator.expect_errors(r"status of 422")
    operator.check("amount-error")
    p.get_by_label("Meter number").fill(meter[:-1] + str((int(meter[-1]) + 1) % 10))  # a wrong check digit
    p.get_by_label("Amount paid").fill("75.00")
    p.get_by_role("button", name="Quote").click()
    assert field_error(p, "Meter number")
    operator.expect_errors(r"status of 422")

    p.get_by_label("Meter number").fill(meter)
    p.get_by_label("Amount paid").fill("75.00")
    p.get_by_role("button", name="Quote").click()
    expect(p.get_by_role("heading", name=f"Quote for meter {meter}")).to_be_visible()
    quote = p.locator("section dl.facts")
    expect(quote).to_contain_text("75.00")
    expect(quote).to_contain_text("Credit")
    operator.check("quote")

    p.get_by_role("button", name="Confirm and issue the token").click()
    expect(p.get_by_role("heading", level=1)).to_have_text("Receipt")
    expect(p).to_have_url(re.compile(r"/console/vends/[\w-]+$"))
    vend_url = p.url
    tokens = [t.inner_text().strip() for t in p.locator("ol.tokens .token").all()]
    assert tokens and all(TOKEN.match(t) for t in tokens), tokens
    expect(p.locator("article.receipt")).to_contain_text("75.00")
    operator.check("receipt")

    # the Print button prints (window.print, counted here), and the print stylesheet leaves only the receipt
    p.evaluate("() => { window.__printed = 0; window.print = () => { window.__printed += 1; }; }")
    p.get_by_role("button", name="Print", exact=True).click()
    assert p.evaluate("() => window.__printed") == 1
    p.emulate_media(media="print")
    operator.shot("receipt-print")
    expect(p.get_by_role("navigation", name="Console")).to_be_hidden()
    expect(p.get_by_role("button", name="Reverse")).to_be_hidden()
    expect(p.get_by_role("button", name="Print", exact=True)).to_be_hidden()
    expect(p.locator("ol.tokens")).to_be_visible()
    p.emulate_media(media="screen")

    # a reprint is its own page, marked as such, with the same tokens
    p.get_by_role("button", name="Reprint").click()
    expect(p.locator("article.receipt h2")).to_contain_text("REPRINT")
    assert [t.inner_text().strip() for t in p.locator("ol.tokens .token").all()] == tokens
    operator.check("reprint")

    # reversal: a reason is asked for, next to its field, then the vend is reversed
    operator.goto(vend_url.removeprefix(console.base_url))
    p.get_by_role("button", name="Reverse").click()
    assert field_error(p, "Reason")
    operator.expect_errors(r"status of 422")
    operator.check("reverse-without-reason")
    p.get_by_label("Reason").fill("customer paid twice (test)")
    p.get_by_role("button", name="Reverse").click()
    expect(p.locator("article.receipt h2")).to_contain_text("REVERSED")
    expect(p.get_by_role("button", name="Reverse")).to_have_count(0)
    operator.check("reversed")

    # the list of vends shows it reversed, and the audit log says who did it
    operator.goto(f"/console/vends?meter={meter}")
    expect(p.locator("table tbody tr").first).to_contain_text("reversed")
    operator.goto(f"/console/audit?actor=console:{console.operator.name}")  # the console acts as console:<name>
    expect(p.locator("table tbody")).to_contain_text("revers")
    operator.check("audit")


def test_issue_a_clear_tamper_token(operator: Watched, console: Console) -> None:
    p, meter = operator.page, console.seeded.engineering_meter
    operator.goto(f"/console/meters/{meter}")
    p.get_by_role("link", name="Engineering token").click()
    expect(p.get_by_role("heading", level=1)).to_have_text("Engineering tokens")
    expect(p.get_by_label("Meter number")).to_have_value(meter)
    operator.check("engineering")
    p.get_by_label("Token", exact=True).select_option(label="Clear tamper")
    p.get_by_role("button", name="Issue the token").click()
    expect(p.get_by_role("heading", level=1)).to_have_text("Engineering token")
    receipt = p.locator("article.receipt")
    expect(receipt).to_contain_text(meter)
    expect(receipt).to_contain_text("clear_tamper")
    tokens = [t.inner_text().strip() for t in p.locator("ol.tokens .token").all()]
    assert len(tokens) == 1 and TOKEN.match(tokens[0]), tokens
    operator.check("clear-tamper")
    # a value the token does not take as a number is refused next to the field
    operator.goto(f"/console/engineering?meter={meter}")
    p.get_by_label("Token", exact=True).select_option("set_power_limit")
    p.get_by_label("Value").fill("lots")
    p.get_by_role("button", name="Issue the token").click()
    assert field_error(p, "Value")
    operator.expect_errors(r"status of 422")
