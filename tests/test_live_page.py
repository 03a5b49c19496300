"""The live page in headless Chromium (Debian's `chromium`, driven by Playwright; no browser
download): it loads, signs in, shows the area, draws the charts and the feeder's diagram,
receives live updates written after it loaded, and logs no console errors."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from playwright.async_api import async_playwright

from ingest.localtime import DEFAULT_TIMEZONE
from ingest.model import Event, Reading
from ingest.schema import ensure_partitions
from ingest.writer import ReadingWriter
from tests.api_auth import credentials, user
from tests.test_live_api import seed, serve

CHROMIUM = "/usr/bin/chromium"
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
START = NOW - timedelta(hours=6)  # m1's curve: 24 intervals before the page loads


def seed_page(url: str) -> dict[str, int]:
    """The feed's seed (a1: m1, m2; f1) plus area a2 on f1, m1's register and voltage over
    the last 6 h, today's line loss of a1 (high) and a2 (normal), an open case at m1."""
    ids = seed(url)
    today = datetime.combine(
        datetime.now(ZoneInfo(DEFAULT_TIMEZONE)).date(), time(), ZoneInfo(DEFAULT_TIMEZONE)
    )
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO areas (name, feeder_id, transformer_kva)"
            " SELECT 'a2', id, 100 FROM feeders WHERE name = 'f1'"
        )
        times = [START + timedelta(minutes=15 * k) for k in range(25)]
        ensure_partitions(
            conn, {t.date() for t in times} | {NOW.date(), (NOW + timedelta(hours=1)).date()}
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO readings (device_id, quantity, ts, value) VALUES (%s, %s, %s, %s)",
                [(ids["m1"], "1.8.0", t, 100 + 0.5 * k) for k, t in enumerate(times)]
                + [(ids["m1"], "32.7.0", t, 228 + k % 5) for k, t in enumerate(times)],
            )
        for name, rate, status in (("a1", 12.3, "high"), ("a2", 3.1, "normal")):
            conn.execute(
                "INSERT INTO lineloss (level, name, period, start, supply, sales, loss, rate,"
                " coverage, status) VALUES ('area', %s, 'day', %s, 100, %s, %s, %s, 1, %s)",
                (name, today, 100 - rate, rate, rate, status),
            )
        conn.execute(
            "INSERT INTO anomaly_cases (device_id, area, kind, score, theft_score, rank, since,"
            " evidence, window_start, window_end) VALUES (%s, 'a1', 'theft', 7.5, 7.5, 1, %s,"
            " '{}', %s, %s)",
            (ids["m1"], START, START, NOW),
        )
    user(url, "ann", "s3cret-passphrase", ["viewer"])
    return ids


@pytest.fixture
async def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: `make test` installs Debian's chromium")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        await b.close()


async def test_the_page_signs_in_shows_the_area_and_follows_the_feed(
    migrated_url, browser, collector_store
):
    ids = seed_page(migrated_url)
    async with serve(migrated_url) as live:
        page = await browser.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        await page.goto(f"{live.url}/live#a1")
        await page.fill("input[name=username]", "ann")
        await page.fill("input[name=password]", "s3cret-passphrase")
        await page.click("#login button")
        await page.wait_for_selector("body[data-area=a1]", timeout=15_000)
        assert await page.evaluate("sessionStorage.getItem('gridread.token') !== null")
        assert await page.text_content("#area-name") == "a1"
        # the area's meters in force (m0 left a1), m1's latest values
        rows = await page.eval_on_selector_all(
            "#values tbody tr", "rs => rs.map(r => r.dataset.meter)"
        )
        assert sorted(rows) == ["m1", "m2"]
        assert await page.text_content("#row-m1 td.q-32\\.7\\.0") == "232.0"  # 228 + 24 % 5
        # today's worst areas, the open case, the diagram coloured by status
        assert await page.eval_on_selector_all(
            "#loss tbody tr",
            "rs => rs.map(r => r.cells[0].textContent + ' ' + r.cells[2].textContent)",
        ) == ["a1 high", "a2 normal"]
        assert "theft" in await page.text_content("#cases tbody")
        statuses = await page.eval_on_selector_all(
            "#diagram g.area", "gs => gs.map(g => g.dataset.area + ':' + g.dataset.status)"
        )
        assert sorted(statuses) == ["a1:high", "a2:normal"]
        assert (
            await page.eval_on_selector(
                "#diagram g[data-area=a1] circle", "c => c.getAttribute('class')"
            )
            == "status-high"
        )
        # the charts: 24 intervals of 0.5 kWh = 2 kW; 25 voltages with the 220 V limits
        assert await page.locator("#curve canvas").count() == 1
        assert await page.locator("#voltage canvas").count() == 1
        curve = await page.evaluate("state.curve.data[1]")
        assert curve == [pytest.approx(2.0)] * 24  # 0.5 kWh / 0.25 h
        limits = await page.evaluate("[state.voltage.data[2][0], state.voltage.data[3][0]]")
        assert limits == [pytest.approx(220 * 1.07), pytest.approx(220 * 0.90)]
        await page.wait_for_function("document.querySelector('#feed').textContent === 'live'")

        # written after the page loaded: a reading of m2 and m1's, an alarm at m1
        writer = ReadingWriter(migrated_url)
        after = START + timedelta(minutes=15 * 25)
        await writer.write_batch(
            [
                Reading(ids["m2"], "32.7.0", after, 233.3, 0),
                Reading(ids["m1"], "32.7.0", after, 231.0, 0),
                Reading(ids["m1"], "1.8.0", after, 113.0, 0),  # 1 kWh in 15 min: 4 kW
                Reading(ids["m3"], "32.7.0", after, 199.0, 0),  # not in a1: not shown
            ]
        )
        await collector_store.add_events([Event(ids["m1"], after, "cover_open", {"count": 1})])
        await page.wait_for_function(
            "document.querySelector('#row-m2 td.q-32\\\\.7\\\\.0').textContent === '233.3'",
            timeout=10_000,
        )
        await page.wait_for_function("state.volts.length === 26 && state.energy.length === 26")
        assert (await page.evaluate("state.curve.data[1]"))[-1] == pytest.approx(4.0)
        await page.wait_for_selector("#alarms li.alarm", timeout=10_000)
        assert "m1: cover_open" in await page.text_content("#alarms li.alarm")
        assert await page.evaluate("Number(document.body.dataset.updates)") == 3
        await page.close()
    assert problems == []


async def test_an_api_key_signs_in_too(migrated_url, browser):
    """The demo's users have API keys, no passwords: the key is used as the bearer token."""
    seed_page(migrated_url)
    key = credentials(migrated_url, "viewer")["X-API-Key"]
    async with serve(migrated_url) as live:
        page = await browser.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        await page.goto(f"{live.url}/live#a1")
        await page.fill("input[name=key]", key)
        await page.click("#login button")
        await page.wait_for_selector("body[data-area=a1]", timeout=15_000)
        assert await page.evaluate("sessionStorage.getItem('gridread.token')") == key
        await page.wait_for_function("document.querySelector('#feed').textContent === 'live'")
        await page.close()
    assert problems == []
