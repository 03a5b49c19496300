"""The MQTT worker's database calls through the collectors' store: dead letters the database
refuses, and temporary errors retried with the message left unacknowledged (a real
PostgreSQL raising real errors, a real Mosquitto)."""

from __future__ import annotations

import asyncio
import logging

import psycopg

from ingest.deadletters import DeadLetter
from tests.test_mqtt_hostile import (
    READINGS,
    add_device,
    good,
    publish,
    rows,
    running_worker,
    wait_for,
)

LETTERS = "SELECT reason, payload, raw, raw_size FROM dead_letters ORDER BY id"


async def test_a_refused_dead_letter_is_stored_again_as_its_raw_bytes(collector_store):
    url = collector_store.pool.conninfo
    with psycopg.connect(url) as conn:
        conn.execute("ALTER TABLE dead_letters ADD CHECK (reason NOT LIKE '%forbidden%')")
    await collector_store.add_dead_letters(
        [
            DeadLetter("mqtt", "a forbidden reason", {"topic": "t/1"}, b"x" * 100),
            DeadLetter("mqtt", "fine", {"topic": "t/2"}, b"y" * 10),
        ],
        raw_max=16,
    )
    assert [(r, p, bytes(raw), n) for r, p, raw, n in rows(url, LETTERS)] == [
        ("dead letter refused (CheckViolation); raw bytes kept", {}, b"x" * 16, 100),
        ("fine", {"topic": "t/2"}, b"y" * 10, 10),
    ]


OUTAGE = """
    CREATE TABLE outage (since timestamptz);
    INSERT INTO outage VALUES (now());
    CREATE FUNCTION outage() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM outage) THEN  -- serialization_failure: temporary
            RAISE EXCEPTION 'simulated outage' USING ERRCODE = '40001';
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER outage BEFORE INSERT ON dead_letters FOR EACH ROW EXECUTE FUNCTION outage();
"""


async def test_a_temporary_error_is_retried_and_the_messages_wait(
    migrated_url, mqtt_broker, caplog
):
    caplog.set_level(logging.WARNING, logger="collectors.mqtt.worker")
    add_device(migrated_url)
    with psycopg.connect(migrated_url) as conn:
        conn.execute(OUTAGE)
    async with running_worker(migrated_url, mqtt_broker) as (_worker, task):
        await asyncio.to_thread(publish, mqtt_broker, [(READINGS, b"{not json"), good()])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while "storing a dead letter failed" not in caplog.text and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert "retrying" in caplog.text
        # one worker handles messages in order: the good one waits behind the dead letter
        assert rows(migrated_url, "SELECT count(*) FROM readings") == [(0,)]
        with psycopg.connect(migrated_url) as conn:
            conn.execute("DELETE FROM outage")
        assert await wait_for(migrated_url, "SELECT count(*) FROM readings", 1) == 1
        assert not task.done()
    [(reason, payload, raw, _size)] = rows(migrated_url, LETTERS)
    assert "not JSON" in reason and bytes(raw) == b"{not json" and payload["topic"] == READINGS
