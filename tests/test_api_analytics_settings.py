"""The API computes from registers with the analytics settings of `gridread run` (register
modulus, max step, alignment tolerance), as the line-loss job does: gridread.runtime.api_app
hands them to create_app."""

from __future__ import annotations

import psycopg
from fastapi.testclient import TestClient

from gridread.runtime import api_app, lineloss_policy
from gridread.settings import Settings
from tests.api_auth import credentials
from tests.test_lineloss_job import world


def members(app, url: str) -> dict[str, tuple[float, int]]:
    with TestClient(app, headers=credentials(url, "viewer")) as client:
        r = client.get("/lineloss/areas/a-01/contributions", params={"day": "2026-11-10"})
    assert r.status_code == 200, r.text
    return {m["meter"]: (m["energy"], m["intervals_present"]) for m in r.json()["members"]}


def test_contributions_follow_the_register_max_step_setting(migrated_url):
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        world(conn)
    default = Settings(timezone="Asia/Shanghai")
    strict = Settings(timezone="Asia/Shanghai", register_max_step=22)
    assert lineloss_policy(strict).register_max_step == 22
    # c1's register (tests/test_lineloss_job.py) advances 20, 25, 20, 15 kWh per interval,
    # c2's 16, 17, 18, 16. Default max step 10,000: c1 has 4 intervals, 80 kWh. Max step 22:
    # the advance of 25 is implausible (NaN, not counted): 3 intervals, 20 + 20 + 15 = 55.
    assert members(api_app(migrated_url, default), migrated_url)["c1"] == (80, 4)
    got = members(api_app(migrated_url, strict), migrated_url)
    assert got["c1"] == (55, 3)
    assert got["c2"] == (67, 4)  # 16 + 17 + 18 + 16, every advance within 22
