"""Migration 13: VEE-validated reads (issue 10).

``validated_reads``: one row per device, quantity, instant and *version*. Quantities:
``1.8.0`` is the validated 15-min interval energy of the interval starting at ``ts``
(secondary kWh); ``1.8.0*d`` … ``1.8.4*d`` the validated daily frozen registers at the
freeze instant ``ts``. ``method`` actual | estimated | edited, ``rules`` the bits of
``analytics.vee.Rule`` that touched the value, ``valid`` whether billing may use it. A new
version is written only when something changed; the previous one is kept with
``current = false``. An edit (by a person, with a reason) is a version too, and its audit
row is in ``audit_log``; the job never overwrites an edited value.
"""

VEE_MIGRATION = (
    13,
    "VEE: validated reads, versioned",
    """
    CREATE TABLE validated_reads (
        device_id  integer NOT NULL REFERENCES devices (id),
        quantity   text NOT NULL,
        ts         timestamptz NOT NULL,
        version    integer NOT NULL CHECK (version >= 1),
        value      double precision,                 -- NULL: could not be estimated
        method     text NOT NULL CHECK (method IN ('actual', 'estimated', 'edited')),
        rules      integer NOT NULL DEFAULT 0,       -- analytics.vee.Rule bits
        valid      boolean NOT NULL,
        current    boolean NOT NULL DEFAULT true,
        edited_by  text,
        reason     text,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (device_id, quantity, ts, version),
        CHECK ((method = 'edited') = (edited_by IS NOT NULL AND reason IS NOT NULL))
    );
    CREATE UNIQUE INDEX validated_reads_current
        ON validated_reads (device_id, quantity, ts) WHERE current;
    """,
)
