"""Load control through the API: request by a load operator, approval by another user,
execution by the runtime's executor on simulated meters (a real pty bus, Modbus TCP), the
relay state read back; the refusals (own approval, roles, devices that cannot) and the
audit rows of every step."""

import psycopg
from fastapi.testclient import TestClient

from api.app import create_app
from tests.api_auth import credentials
from tests.control_rig import ControlRig


def _clients(url):
    return {
        "alice": credentials(url, "load_operator", "alice"),
        "bob": credentials(url, "load_operator", "bob"),
        "viewer": credentials(url, "viewer", "vera"),
        "admin": credentials(url, "admin", "adam"),
        "billing": credentials(url, "billing", "bill"),
    }


DISCONNECT = {"device": "dlt-0", "action": "disconnect", "reason": "arrears: notice 114"}


async def test_request_approve_execute_and_read_the_relay_back(migrated_url):
    async with ControlRig(migrated_url) as rig:
        who = _clients(migrated_url)
        with TestClient(create_app(migrated_url)) as api:
            made = api.post("/control/commands", json=DISCONNECT, headers=who["alice"])
            assert made.status_code == 201, made.text
            command = made.json()
            assert command["status"] == "requested" and command["requested_by"] == "alice"
            url = f"/control/commands/{command['id']}"
            # the requester can never approve their own request
            own = api.post(f"{url}/approve", headers=who["alice"])
            assert own.status_code == 403 and "another user must approve" in own.json()["detail"]
            # approving is not the administrator's, nor a viewer's, nor anonymous
            assert api.post(f"{url}/approve", headers=who["admin"]).status_code == 403
            assert api.post(f"{url}/approve", headers=who["viewer"]).status_code == 403
            assert api.post(f"{url}/approve").status_code == 401
            assert rig.bus_sim.meters[rig.dlt[0].address].relay_closed  # nothing ran yet
            approved = api.post(f"{url}/approve", headers=who["bob"])
            assert approved.status_code == 200 and approved.json()["approved_by"] == "bob"
            assert api.post(f"{url}/approve", headers=who["bob"]).status_code == 409
        [done] = await rig.executor.step()  # the runtime's executor, as it runs every round
        assert done["id"] == command["id"]
        with TestClient(create_app(migrated_url)) as api:
            row = api.get(url, headers=who["viewer"]).json()
            assert row["status"] == "succeeded", row["error"]
            # the relay state read back equals the simulator's
            assert row["result"]["relay"] == "open" and not rig.dlt[0].relay_closed
            listed = api.get(
                "/control/commands", params={"device": "dlt-0"}, headers=who["viewer"]
            ).json()
            assert [c["id"] for c in listed] == [command["id"]]
            assert api.get("/control/commands").status_code == 401
    with psycopg.connect(migrated_url) as conn:
        steps = conn.execute(
            "SELECT actor, action FROM audit_log WHERE entity = 'control_command'"
            " AND entity_id = %s ORDER BY id",
            (str(command["id"]),),
        ).fetchall()
    actors = [(actor.split("/")[0], action) for actor, action in steps]
    assert actors == [
        ("alice", "control.request"),
        ("bob", "control.approve"),
        ("gridread", "control.execute"),
        ("gridread", "control.succeed"),
    ]


async def test_refusals_with_their_reasons(migrated_url):
    async with ControlRig(migrated_url) as rig:
        who = _clients(migrated_url)
        with psycopg.connect(migrated_url) as conn:
            conn.execute(
                "INSERT INTO devices (name, kind, protocol, endpoint, poll_interval, attributes)"
                " VALUES ('mqtt-1', 'meter', 'mqtt', 'jzq-1', 900,"
                ' \'{"concentrator": "jzq-1"}\') ON CONFLICT (name) DO NOTHING'
            )
        with TestClient(create_app(migrated_url)) as api:

            def post(body, user="alice"):
                return api.post("/control/commands", json=body, headers=who[user])

            assert post(DISCONNECT, "viewer").status_code == 403
            assert post(DISCONNECT, "billing").status_code == 403
            assert api.post("/control/commands", json=DISCONNECT).status_code == 401
            missing = post({**DISCONNECT, "device": "nope"})
            assert missing.status_code == 404
            mqtt = post({**DISCONNECT, "device": "mqtt-1"})
            assert mqtt.status_code == 422
            assert mqtt.json()["detail"] == (
                "mqtt-1 is read through jzq-1 (MQTT): gridread sends it no relay commands"
            )
            limit = post({**DISCONNECT, "action": "demand_limit", "parameters": {"kw": 5}})
            assert limit.status_code == 422
            assert (
                limit.json()["detail"] == "dlt-0: DL/T 645 relay control (1C) has no demand limit"
            )
            assert post({**DISCONNECT, "parameters": {"kw": 5}}).status_code == 422
            bad = post({**DISCONNECT, "device": "mb-1", "action": "demand_limit"})
            assert bad.status_code == 422  # no {"kw": …}
            ok = post(
                {
                    **DISCONNECT,
                    "device": "mb-1",
                    "action": "demand_limit",
                    "parameters": {"kw": 7.5},
                }
            )
            assert ok.status_code == 201, ok.text
            first = ok.json()["id"]
            # cancel: only the requester; reject: only another approver, with a reason
            assert (
                api.post(f"/control/commands/{first}/cancel", headers=who["bob"]).status_code == 403
            )
            cancelled = api.post(f"/control/commands/{first}/cancel", headers=who["alice"])
            assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
            second = post({**DISCONNECT, "device": "mb-2"}).json()["id"]
            own = api.post(
                f"/control/commands/{second}/reject", json={"reason": "x"}, headers=who["alice"]
            )
            assert own.status_code == 403
            rejected = api.post(
                f"/control/commands/{second}/reject",
                json={"reason": "customer paid"},
                headers=who["bob"],
            ).json()
            assert rejected["status"] == "rejected" and rejected["decided_by"] == "bob"
            assert rejected["error"] == "rejected by bob: customer paid"
            assert api.get("/control/commands/999", headers=who["viewer"]).status_code == 404
        assert await rig.executor.step() == []  # nothing approved: nothing runs
        assert rig.modbus_sim.relay_closed == {1: True, 2: True}
        assert rig.modbus_sim.demand_limit == {}
