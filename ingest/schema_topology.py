"""Migration 7: the grid's topology and its metering assets (issue 9).

substation → feeder (10 kV line) → area (台区: a public distribution transformer and its LV
customers, or a dedicated transformer 专变 with one customer) → metering points.

A *metering point* places a meter (any ``devices`` row, of any protocol) in the grid for a
period ``[valid_from, valid_to)``: its role, where it is, its CT and PT ratios (倍率 =
CT × PT) and the customer's class and tariff. A meter moved to another area or a multiplier
changed on a date is a new row, the old one closed at that instant; analytics use the row in
force for each interval. A meter has at most one row in force at any instant (an exclusion
constraint), so "a meter in two areas" cannot be stored.

Roles: ``feeder_head`` (the feeder's head meter at the substation; ``feeder_id`` set),
``area_total`` (台区总表, or the dedicated customer's meter of a 专变 area; ``area_id`` set),
``customer`` (an LV customer's meter; ``area_id`` set).

``meter_assets`` is the metering asset ledger (电能计量管理) of each meter; ``meter_replacements``
records 换表 with the old meter's final and the new meter's first register readings, so that
interval energy across a replacement is neither a rollover nor lost energy.
"""

TOPOLOGY_MIGRATION = (
    7,
    "grid topology: substations, feeders, areas, metering points, assets, replacements",
    """
    CREATE EXTENSION IF NOT EXISTS btree_gist;
    CREATE TABLE substations (
        id         serial PRIMARY KEY,
        name       text NOT NULL UNIQUE,
        voltage_kv double precision NOT NULL CHECK (voltage_kv > 0),  -- its highest level
        attributes jsonb NOT NULL DEFAULT '{}'::jsonb
    );
    CREATE TABLE feeders (
        id            serial PRIMARY KEY,
        name          text NOT NULL UNIQUE,
        substation_id integer NOT NULL REFERENCES substations (id),
        voltage_kv    double precision NOT NULL DEFAULT 10 CHECK (voltage_kv > 0),
        attributes    jsonb NOT NULL DEFAULT '{}'::jsonb
    );
    CREATE TABLE areas (
        id              serial PRIMARY KEY,
        name            text NOT NULL UNIQUE,
        feeder_id       integer NOT NULL REFERENCES feeders (id),
        kind            text NOT NULL DEFAULT 'public' CHECK (kind IN ('public', 'dedicated')),
        transformer_kva double precision NOT NULL CHECK (transformer_kva > 0),
        lv_voltage_kv   double precision NOT NULL DEFAULT 0.4 CHECK (lv_voltage_kv > 0),
        attributes      jsonb NOT NULL DEFAULT '{}'::jsonb
    );
    CREATE TABLE metering_points (
        id             bigserial PRIMARY KEY,
        device_id      integer NOT NULL REFERENCES devices (id),
        role           text NOT NULL CHECK (role IN ('feeder_head', 'area_total', 'customer')),
        feeder_id      integer REFERENCES feeders (id),
        area_id        integer REFERENCES areas (id),
        phase          text NOT NULL DEFAULT 'ABC' CHECK (phase IN ('A', 'B', 'C', 'ABC')),
        ct_ratio       double precision NOT NULL DEFAULT 1 CHECK (ct_ratio > 0),
        pt_ratio       double precision NOT NULL DEFAULT 1 CHECK (pt_ratio > 0),
        multiplier     double precision GENERATED ALWAYS AS (ct_ratio * pt_ratio) STORED,
        customer_class text,            -- residential | commercial | industrial | …
        tariff         text,
        location       text,
        valid_from     timestamptz NOT NULL,
        valid_to       timestamptz,     -- exclusive; NULL: still in force
        CHECK (valid_to IS NULL OR valid_to > valid_from),
        CHECK ((role = 'feeder_head') = (feeder_id IS NOT NULL AND area_id IS NULL)),
        CHECK ((role <> 'feeder_head') = (area_id IS NOT NULL AND feeder_id IS NULL)),
        EXCLUDE USING gist (device_id WITH =, tstzrange(valid_from, valid_to) WITH &&)
    );
    CREATE INDEX metering_points_area ON metering_points (area_id, valid_from);
    CREATE INDEX metering_points_feeder ON metering_points (feeder_id, valid_from);
    CREATE TABLE meter_assets (
        device_id         integer PRIMARY KEY REFERENCES devices (id),
        model             text,
        accuracy_class    text,         -- active energy class: 0.2S 0.5S 1 2 (or A B C D)
        ct_class          text,
        pt_class          text,
        installed         date,
        last_verified     date,         -- 周期检定
        next_verification date,
        rotation_plan     text          -- 轮换: e.g. the year it is due for replacement
    );
    CREATE TABLE meter_replacements (
        id            bigserial PRIMARY KEY,
        old_device_id integer NOT NULL REFERENCES devices (id),
        new_device_id integer NOT NULL REFERENCES devices (id),
        at            timestamptz NOT NULL,
        quantity      text NOT NULL DEFAULT '1.8.0',
        old_final     double precision NOT NULL,  -- the old meter's register when removed
        new_first     double precision NOT NULL,  -- the new meter's register when fitted
        CHECK (old_device_id <> new_device_id),
        UNIQUE (old_device_id, quantity)
    );
    """,
)
