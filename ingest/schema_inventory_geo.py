"""Migration 16: where areas and devices are (WGS 84), and which inventory entries the API
owns (issue 11).

- ``areas.longitude/latitude`` (the transformer) and ``devices.longitude/latitude`` (a meter,
  concentrator or monitor): decimal degrees, both or neither; ``GET /inventory/geojson``.
- ``inventory_overrides``: an entry created, changed or deleted through the API is the
  database's from then on: the config file's sync at start leaves it as it is and reports a
  difference as a conflict (README "Inventory API"). ``entity`` as in ``audit_log``
  (device, substation, feeder, area, metering_point, meter_asset, replacement); a metering
  point's ``entity_id`` is its meter (the meter's placement history as a whole).
"""

INVENTORY_GEO_MIGRATION = (
    16,
    "locations of areas and devices; inventory entries owned by the API",
    """
    ALTER TABLE areas
        ADD COLUMN longitude double precision CHECK (longitude BETWEEN -180 AND 180),
        ADD COLUMN latitude  double precision CHECK (latitude BETWEEN -90 AND 90),
        ADD CHECK ((longitude IS NULL) = (latitude IS NULL));
    ALTER TABLE devices
        ADD COLUMN longitude double precision CHECK (longitude BETWEEN -180 AND 180),
        ADD COLUMN latitude  double precision CHECK (latitude BETWEEN -90 AND 90),
        ADD CHECK ((longitude IS NULL) = (latitude IS NULL));
    CREATE TABLE inventory_overrides (
        entity    text NOT NULL,
        entity_id text NOT NULL,
        actor     text NOT NULL,
        at        timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (entity, entity_id)
    );
    """,
)
