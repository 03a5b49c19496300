"""Migration 11: supply reliability (issue 10).

* ``outage_notices``: planned outages (计划停电) and limited-supply orders (限电) of an area or
  a feeder, as the operators announced them; an interruption starting inside one is of its
  kind (RS-3 leaves those kinds out).
* ``interruptions``: per area, the customers' interruptions that overlap in time (the job's
  result): start, end (NULL when some customer's power-up was never recorded), customers
  affected, how many of them have an unknown end, customer minutes of the known ones, kind,
  momentary or sustained.
* ``reliability_indices``: per level (area | feeder | system), name, period (month | year) and
  local period start, the sums (so that a reader can re-check them) and the indices; NULL
  where not defined (CAIDI without sustained interruptions, a group without customers).
Plain tables in both storage modes.
"""

RELIABILITY_MIGRATION = (
    11,
    "supply reliability: outage notices, interruptions, indices",
    """
    CREATE TABLE outage_notices (
        id       bigserial PRIMARY KEY,
        scope    text NOT NULL CHECK (scope IN ('area', 'feeder')),
        name     text NOT NULL,                 -- the area's or feeder's name
        kind     text NOT NULL CHECK (kind IN ('planned', 'limited')),
        start    timestamptz NOT NULL,
        "end"    timestamptz NOT NULL,
        reason   text,
        CHECK ("end" > start)
    );
    CREATE TABLE interruptions (
        area             text NOT NULL,
        feeder           text NOT NULL,
        start            timestamptz NOT NULL,
        "end"            timestamptz,           -- NULL: some customer's end is unknown
        customers        integer NOT NULL,       -- customer interruptions in it
        open             integer NOT NULL,       -- of those, with an unknown end
        customer_minutes double precision NOT NULL,  -- of the known ends
        kind             text NOT NULL CHECK (kind IN ('unplanned', 'planned', 'limited')),
        momentary        boolean NOT NULL,
        computed_at      timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (area, start)
    );
    CREATE INDEX interruptions_start ON interruptions (start);
    CREATE TABLE reliability_indices (
        level            text NOT NULL CHECK (level IN ('area', 'feeder', 'system')),
        name             text NOT NULL,
        period           text NOT NULL CHECK (period IN ('month', 'year')),
        start            timestamptz NOT NULL,
        hours            double precision NOT NULL,  -- the period's length (so far)
        customers        integer NOT NULL,
        sustained        integer NOT NULL,
        momentary        integer NOT NULL,
        open             integer NOT NULL,           -- unknown duration: in no index
        customer_minutes double precision NOT NULL,
        minutes_rs3      double precision NOT NULL,
        saifi            double precision,
        saidi            double precision,           -- minutes
        caidi            double precision,           -- minutes
        asai             double precision,
        maifi            double precision,
        rs1              double precision,           -- percent
        rs3              double precision,           -- percent
        computed_at      timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (level, name, period, start)
    );
    """,
)
