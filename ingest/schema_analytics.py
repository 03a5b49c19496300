"""Migration 8: analytics results (issue 9).

* ``lineloss``: one row per level (area | feeder | voltage), group name, period (15min | day |
  month) and period start: supply, sales, loss (kWh, primary), rate (%), coverage (share of
  expected meter-intervals present) and status. Loss and rate are NULL where not computable
  (不可算), never a fake number. Upserted by the job, so a recomputation replaces the row.
* ``meter_errors``: each meter's estimated relative error over a window (least squares on an
  area's energy balance), with its confidence interval; NULL where not identifiable.
* ``mapping_flags``: the meter-to-area check's evidence per meter and window.
* ``analytics_watermarks``: per job, the end of the intervals computed and the topology seen
  (per metering point a hash and its valid_from), to compute only what is new or changed.
Plain tables in both storage modes (small next to readings).
"""

ANALYTICS_MIGRATION = (
    8,
    "analytics results: line loss, meter errors, mapping flags, watermarks",
    """
    CREATE TABLE lineloss (
        level       text NOT NULL CHECK (level IN ('area', 'feeder', 'voltage')),
        name        text NOT NULL,
        period      text NOT NULL CHECK (period IN ('15min', 'day', 'month')),
        start       timestamptz NOT NULL,
        supply      double precision,
        sales       double precision,
        loss        double precision,
        rate        double precision,             -- percent
        coverage    double precision NOT NULL CHECK (coverage >= 0 AND coverage <= 1),
        status      text NOT NULL
                    CHECK (status IN ('not_computable', 'negative', 'normal', 'high')),
        -- meter-intervals present / expected (members and supply), so that a month can be
        -- summed from its days exactly as from its intervals
        present         integer NOT NULL DEFAULT 0,
        expected        integer NOT NULL DEFAULT 0,
        supply_present  integer NOT NULL DEFAULT 0,
        supply_expected integer NOT NULL DEFAULT 0,
        computed_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (level, name, period, start)
    );
    CREATE INDEX lineloss_period ON lineloss (level, period, start);
    CREATE TABLE meter_errors (
        area         text NOT NULL,
        device_id    integer NOT NULL REFERENCES devices (id),
        window_start timestamptz NOT NULL,
        window_end   timestamptz NOT NULL,
        error_pct    double precision,             -- NULL: not identifiable
        ci_low       double precision,
        ci_high      double precision,
        identifiable boolean NOT NULL,
        flagged      boolean NOT NULL,
        computed_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (area, device_id, window_end)
    );
    CREATE TABLE mapping_flags (
        device_id     integer NOT NULL REFERENCES devices (id),
        window_start  timestamptz NOT NULL,
        window_end    timestamptz NOT NULL,
        assigned_area text NOT NULL,
        own_corr      double precision,
        best_area     text,
        best_corr     double precision,
        overlap       integer NOT NULL,
        flagged       boolean NOT NULL,
        computed_at   timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (device_id, window_end)
    );
    CREATE TABLE analytics_watermarks (
        job        text PRIMARY KEY,
        done_until timestamptz NOT NULL,           -- intervals before it have been computed
        topology   jsonb NOT NULL DEFAULT '{}'::jsonb,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    """,
)
