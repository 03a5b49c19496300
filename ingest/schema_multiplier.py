"""Migration 9: the wrong-multiplier check's results (issue 9), one row per suspect check.

``check`` = 'step': a metering point's multiplier changed at ``at`` and the area's loss moved
(or not) by what a ledger-only change predicts; 'factor': the meter-error estimate over the
window implies a multiplier far from the ledger's (``at`` = the window's start). NULL where
a figure does not apply."""

MULTIPLIER_MIGRATION = (
    9,
    "analytics results: wrong-multiplier flags",
    """
    CREATE TABLE multiplier_flags (
        device_id          integer NOT NULL REFERENCES devices (id),
        area               text NOT NULL,
        window_start       timestamptz NOT NULL,
        window_end         timestamptz NOT NULL,
        check_kind         text NOT NULL CHECK (check_kind IN ('step', 'factor')),
        at                 timestamptz NOT NULL,
        multiplier_before  double precision,   -- the ledger's, before the change
        multiplier_after   double precision,   -- the ledger's in force (after the change)
        expected_jump      double precision,   -- kWh per interval, if the change is wrong
        observed_jump      double precision,
        stderr             double precision,
        error_pct          double precision,   -- factor: the estimated meter error
        implied_multiplier double precision,   -- factor: what would make the meter right
        flagged            boolean NOT NULL,
        computed_at        timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (device_id, window_end, check_kind, at)
    );
    """,
)
