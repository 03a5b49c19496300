"""Migration 10: power-quality results (issue 10, analytics/power_quality*.py).

* ``pq_voltage``: voltage qualification (电压合格率) per subject, phase, period (day | week |
  month, local) and start. ``kind``: monitor | meter (``name`` the device) | area (its
  meters' phases summed) | class (A–D, the monitors of that class summed) | composite
  (``name`` 'all': the weighted rate over the classes). Times in seconds; ``rate`` NULL where
  nothing was monitored. Days are computed from the readings; weeks and months are sums of
  their days (seconds add exactly). The 10-min counts feed the EN 50160-style weekly
  compliance (``compliant`` on week rows only).
* ``pq_unbalance``: three-phase voltage and current unbalance per meter and period: values
  counted, how many with the angles known (negative-sequence ratio; the others by max
  deviation from the mean), within the normal limit, beyond the short-term one, the maximum.
* ``pq_monitor_flags``: per voltage monitor and local day, its own statistics
  (voltage_daily_stats) beside gridread's, and why they disagree.
"""

PQ_MIGRATION = (
    10,
    "power quality: voltage qualification, unbalance, monitor disagreements",
    """
    CREATE TABLE pq_voltage (
        kind         text NOT NULL
                     CHECK (kind IN ('monitor', 'meter', 'area', 'class', 'composite')),
        name         text NOT NULL,
        phase        text NOT NULL CHECK (phase IN ('A', 'B', 'C', '-')),
        period       text NOT NULL CHECK (period IN ('day', 'week', 'month')),
        start        timestamptz NOT NULL,
        nominal_v    double precision,     -- phase-to-neutral, secondary (monitor, meter)
        upper_pct    double precision,
        lower_pct    double precision,
        monitoring_class text,             -- A B C D (monitors)
        monitored_s  double precision NOT NULL DEFAULT 0,
        missing_s    double precision NOT NULL DEFAULT 0,
        over_s       double precision NOT NULL DEFAULT 0,
        under_s      double precision NOT NULL DEFAULT 0,
        rate         double precision,     -- percent; NULL: nothing monitored
        max_v        double precision,
        min_v        double precision,
        tenmin_means        integer NOT NULL DEFAULT 0,
        tenmin_within       integer NOT NULL DEFAULT 0,
        tenmin_outside_wide integer NOT NULL DEFAULT 0,
        tenmin_incomplete   integer NOT NULL DEFAULT 0,
        days         integer NOT NULL DEFAULT 1,
        compliant    boolean,              -- week rows: EN 50160-style
        computed_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (kind, name, phase, period, start)
    );
    CREATE INDEX pq_voltage_period ON pq_voltage (period, start, kind);
    CREATE TABLE pq_unbalance (
        name          text NOT NULL,       -- the meter
        quantity      text NOT NULL CHECK (quantity IN ('voltage', 'current')),
        period        text NOT NULL CHECK (period IN ('day', 'week', 'month')),
        start         timestamptz NOT NULL,
        n_values      integer NOT NULL,
        n_sequence    integer NOT NULL,    -- of them with angles: negative-sequence ratio
        within_normal integer NOT NULL,
        beyond_short  integer NOT NULL,
        max_pct       double precision,
        share_pct     double precision,    -- within the normal limit, percent
        compliant     boolean,             -- share ≥ the weekly share, none beyond short-term
        days          integer NOT NULL DEFAULT 1,
        computed_at   timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (name, quantity, period, start)
    );
    CREATE TABLE pq_monitor_flags (
        device_id     integer NOT NULL REFERENCES devices (id),
        name          text NOT NULL,
        day           date NOT NULL,
        own_rate      double precision,    -- from the monitor's own minutes
        own_monitored_min integer NOT NULL,
        own_over_min  integer NOT NULL,
        own_under_min integer NOT NULL,
        own_upper_v   double precision NOT NULL,
        own_lower_v   double precision NOT NULL,
        rate          double precision,    -- gridread's, from the stored minutes
        monitored_min double precision NOT NULL,
        over_min      double precision NOT NULL,
        under_min     double precision NOT NULL,
        upper_v       double precision NOT NULL,
        lower_v       double precision NOT NULL,
        diff_pp       double precision,
        reasons       text[] NOT NULL,     -- rate | limits | monitored
        flagged       boolean NOT NULL,
        computed_at   timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (device_id, day)
    );
    """,
)
