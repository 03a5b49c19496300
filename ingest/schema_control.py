"""Migration 15: load-control commands (issue 11).

``control_commands``: one row per command on one device, through its states::

    requested ─┬─> approved ──> executing ─┬─> succeeded
               ├─> rejected                └─> failed
               ├─> expired
               └─> cancelled

and ``approved ─> failed`` when the executor could not start it before ``expires_at`` (an
approval does not make an old request run hours later, after an outage of the runtime).

``requested_by`` / ``approved_by`` are user names (an API key acts as its owner), so the
CHECK that they differ holds for keys too: nobody approves their own request. A trigger
refuses any other transition (the table above as data, ``control_transitions``).
``result`` is what the device said: its reply and the relay state read back; ``error`` why
a command failed, or who rejected / cancelled it and why. Every change is in ``audit_log``.
"""

CONTROL_MIGRATION = (
    15,
    "load control: commands with two-person approval",
    """
    CREATE TABLE control_transitions (
        from_status text NOT NULL,
        to_status   text NOT NULL,
        PRIMARY KEY (from_status, to_status)
    );
    INSERT INTO control_transitions VALUES
        ('requested', 'approved'), ('requested', 'rejected'), ('requested', 'expired'),
        ('requested', 'cancelled'), ('approved', 'executing'), ('approved', 'failed'),
        ('executing', 'succeeded'), ('executing', 'failed');
    CREATE TABLE control_commands (
        id           bigserial PRIMARY KEY,
        device_id    integer NOT NULL REFERENCES devices (id),
        action       text NOT NULL CHECK (action IN ('disconnect', 'reconnect', 'demand_limit')),
        parameters   jsonb NOT NULL DEFAULT '{}'::jsonb,
        status       text NOT NULL DEFAULT 'requested' CHECK (status IN ('requested',
                         'approved', 'executing', 'succeeded', 'failed', 'rejected', 'expired',
                         'cancelled')),
        requested_by text NOT NULL,
        requested_at timestamptz NOT NULL DEFAULT now(),
        reason       text NOT NULL CHECK (length(btrim(reason)) > 0),
        expires_at   timestamptz NOT NULL,
        approved_by  text,
        approved_at  timestamptz,
        decided_by   text,         -- who rejected or cancelled it
        decided_at   timestamptz,
        executed_at  timestamptz,  -- the executor claimed it
        finished_at  timestamptz,
        result       jsonb,
        error        text,
        CHECK (approved_by <> requested_by),
        CHECK ((approved_by IS NOT NULL)
               = (status IN ('approved', 'executing', 'succeeded', 'failed'))),
        CHECK (expires_at > requested_at)
    );
    CREATE INDEX control_commands_open ON control_commands (status, expires_at)
        WHERE status IN ('requested', 'approved');
    CREATE INDEX control_commands_device ON control_commands (device_id, requested_at);
    CREATE FUNCTION control_transition() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.status <> OLD.status AND NOT EXISTS (SELECT 1 FROM control_transitions
                WHERE from_status = OLD.status AND to_status = NEW.status) THEN
            RAISE EXCEPTION 'control command %: % → % is not a transition', OLD.id,
                OLD.status, NEW.status USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER control_transition BEFORE UPDATE ON control_commands
        FOR EACH ROW EXECUTE FUNCTION control_transition();
    """,
)
