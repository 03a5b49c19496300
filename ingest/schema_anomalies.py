"""Migration 12: the inspection worklist (issue 10), one row per case.

A case is a meter suspected of a fault kind by the anomaly rules (analytics/anomalies.py);
the job keeps at most one live case (open or assigned) per meter and kind and refreshes its
score and evidence. Inspectors move it open → assigned → confirmed / false_positive (or back
to open); every transition is kept in ``anomaly_case_history``: the outcomes the rules'
weights are tuned on (``evidence`` holds which rules hit)."""

ANOMALIES_MIGRATION = (
    12,
    "analytics results: abnormal readings and the inspection worklist",
    """
    CREATE TABLE anomaly_cases (
        id           bigserial PRIMARY KEY,
        device_id    integer NOT NULL REFERENCES devices (id),
        area         text,
        kind         text NOT NULL,                -- theft | stopped | reverse_wiring | …
        score        double precision NOT NULL,    -- Σ weights of the rules that hit
        theft_score  double precision NOT NULL,    -- the part suggesting theft
        rank         integer NOT NULL,             -- within its area at the last run
        since        timestamptz,                  -- the earliest hit
        evidence     jsonb NOT NULL,               -- rule → severity, first, value, …
        status       text NOT NULL DEFAULT 'open'
                     CHECK (status IN ('open', 'assigned', 'confirmed', 'false_positive')),
        assignee     text,
        note         text,
        window_start timestamptz NOT NULL,         -- the window of the last run that saw it
        window_end   timestamptz NOT NULL,
        opened_at    timestamptz NOT NULL DEFAULT now(),
        updated_at   timestamptz NOT NULL DEFAULT now(),
        closed_at    timestamptz
    );
    CREATE UNIQUE INDEX anomaly_cases_live ON anomaly_cases (device_id, kind)
        WHERE status IN ('open', 'assigned');
    CREATE INDEX anomaly_cases_area ON anomaly_cases (area, status, score DESC);
    CREATE TABLE anomaly_case_history (
        case_id     bigint NOT NULL REFERENCES anomaly_cases (id),
        at          timestamptz NOT NULL DEFAULT now(),
        from_status text,                          -- NULL: opened by the job
        to_status   text NOT NULL,
        assignee    text,
        note        text
    );
    CREATE INDEX anomaly_case_history_case ON anomaly_case_history (case_id, at);
    """,
)
