"""The dashboard at `/`, in headless Chromium (Debian's `chromium`, driven through Playwright's
Python API): the numbers it shows are /memory/status's, and unloading through the page shows."""

from __future__ import annotations

import shutil

import httpx
import pytest
from front_door import front_door

from memwarden.core.units import format_bytes

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH: `make test` installs Debian's chromium package "
    "(apt-get install chromium)",
)


@pytest.fixture
def page(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with front_door(tmp_path) as (door, fake), sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            with httpx.Client(base_url=door.url, timeout=30) as http:
                http.post("/memory/components/llama3.2/load")
                tab = browser.new_page()
                tab.goto(f"{door.url}/?every=200")
                tab.wait_for_selector('tr[data-model="llama3.2:latest"]')
                yield tab, http, fake
        finally:
            browser.close()


def test_the_pools_shown_are_those_of_memory_status(page):
    tab, http, _ = page
    status = http.get("/memory/status").json()
    shown = [
        (
            row.get_attribute("data-pool"),
            int(row.query_selector('[data-field="total"]').get_attribute("data-bytes")),
            row.query_selector('[data-field="total"]').inner_text(),
            row.query_selector('[data-field="level"]').inner_text(),
        )
        for row in tab.query_selector_all("#pools tbody tr")
    ]
    assert shown == [
        (p["id"], p["total_bytes"], format_bytes(p["total_bytes"]), p["level"])
        for p in status["pools"]
    ]


def test_the_models_shown_are_those_of_memory_status(page):
    tab, http, _ = page
    status = http.get("/memory/status").json()
    shown = [
        (
            row.get_attribute("data-model"),
            int(row.query_selector('[data-field="total"]').get_attribute("data-bytes")),
            row.query_selector('[data-field="total"]').inner_text(),
            row.query_selector('[data-field="in_flight"]').inner_text(),
        )
        for row in tab.query_selector_all("#models tbody tr")
    ]
    assert shown == [
        (m["name"], m["total_bytes"], format_bytes(m["total_bytes"]), "0") for m in status["models"]
    ]


def test_unloading_through_the_page_removes_the_model(page, tmp_path):
    tab, http, fake = page
    tab.click('tr[data-model="llama3.2:latest"] button.unload')
    tab.wait_for_selector('tr[data-model="llama3.2:latest"]', state="detached")
    screenshot = tmp_path / "dashboard.png"
    tab.screenshot(path=str(screenshot), full_page=True)
    assert (fake.loaded, http.get("/memory/status").json()["models"]) == ({}, [])
    assert tab.is_visible("#no-models")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_action_log_shows_the_load(page):
    tab, _, _ = page
    kinds = [item.get_attribute("data-kind") for item in tab.query_selector_all("#log li")]
    assert "model-loaded" in kinds
