"""Migration 14: users, API keys, login tokens; the audit log made append-only and chained.

``users``: ``roles`` checked against the role names of ``api.security.Role`` (a test keeps
the two lists equal); ``password_hash`` NULL: the user cannot log in (API keys only).
``api_keys`` / ``login_tokens`` hold the sha256 of the secret, never the secret: both are
32 random bytes, so a fast hash is enough (nothing to brute-force, unlike a password).

``audit_log`` gets ``prev_hash`` and ``hash``: a BEFORE INSERT trigger locks the chain's
head (``audit_chain``, one row), gives the row the next ``id`` *under that lock* (so id
order is chain order even when transactions interleave) and sets
``hash = sha256(prev_hash || audit_canonical(row))``. The row lock serialises writers under
READ COMMITTED and makes a REPEATABLE READ writer fail (serialisation error) instead of
forking the chain. UPDATE, DELETE and TRUNCATE are refused by triggers; every existing
``INSERT INTO audit_log (actor, action, entity, entity_id, before, after)`` works unchanged.
`audit_canonical` is independent of the session (time as epoch microseconds, jsonb's own
normalised text), so `GET /audit/verify` recomputes the same bytes.
"""

from __future__ import annotations

ROLE_NAMES = ("viewer", "metering_engineer", "load_operator", "billing", "inspector", "admin")
GENESIS = "\\x" + "00" * 32  # prev_hash of the first row

SECURITY_MIGRATION = (
    14,
    "users, API keys, login tokens; audit log hash chain, append-only",
    f"""
    CREATE TABLE users (
        name          text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9._@-]{{1,64}}$'),
        password_hash text,
        roles         text[] NOT NULL DEFAULT '{{}}'
                      CHECK (roles <@ ARRAY{list(ROLE_NAMES)!r}::text[]),
        active        boolean NOT NULL DEFAULT true,
        created_at    timestamptz NOT NULL DEFAULT now(),
        created_by    text NOT NULL
    );
    -- Root and root would be two users who look like one in the audit log
    CREATE UNIQUE INDEX users_name_any_case ON users (lower(name));
    CREATE TABLE api_keys (
        id           bigserial PRIMARY KEY,
        owner        text NOT NULL REFERENCES users (name),
        label        text NOT NULL DEFAULT '',
        key_hash     bytea NOT NULL UNIQUE,
        prefix       text NOT NULL,          -- the key's first characters, for display
        created_at   timestamptz NOT NULL DEFAULT now(),
        expires_at   timestamptz,
        revoked_at   timestamptz,
        last_used_at timestamptz
    );
    CREATE INDEX api_keys_owner ON api_keys (owner);
    CREATE TABLE login_tokens (
        token_hash bytea PRIMARY KEY,
        owner      text NOT NULL REFERENCES users (name),
        issued_at  timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL,
        revoked_at timestamptz
    );
    CREATE INDEX login_tokens_owner ON login_tokens (owner);

    CREATE FUNCTION audit_canonical(
        id bigint, at timestamptz, actor text, action text, entity text, entity_id text,
        before jsonb, after jsonb
    ) RETURNS bytea LANGUAGE sql STABLE AS $$
        SELECT convert_to(jsonb_build_array(
            id, (extract(epoch FROM at) * 1000000)::bigint, actor, action, entity, entity_id,
            before, after)::text, 'UTF8')
    $$;
    CREATE TABLE audit_chain (
        one     boolean PRIMARY KEY DEFAULT true CHECK (one),
        last_id bigint NOT NULL,
        hash    bytea NOT NULL
    );
    ALTER TABLE audit_log ADD COLUMN prev_hash bytea, ADD COLUMN hash bytea;
    DO $$
    DECLARE r record; h bytea := '{GENESIS}'; last bigint := 0;
    BEGIN
        FOR r IN SELECT * FROM audit_log ORDER BY id LOOP
            UPDATE audit_log SET prev_hash = h,
                hash = sha256(h || audit_canonical(r.id, r.at, r.actor, r.action, r.entity,
                                                   r.entity_id, r.before, r.after))
                WHERE id = r.id RETURNING audit_log.hash INTO h;
            last := r.id;
        END LOOP;
        INSERT INTO audit_chain VALUES (true, last, h);
    END $$;
    ALTER TABLE audit_log ALTER COLUMN prev_hash SET NOT NULL,
                          ALTER COLUMN hash SET NOT NULL;
    CREATE INDEX audit_log_entity ON audit_log (entity, entity_id);
    CREATE INDEX audit_log_at ON audit_log (at);

    -- SECURITY DEFINER: the app's role (not the owner, see APP_ROLE_GRANTS) appends rows
    -- without the right to UPDATE audit_chain itself
    CREATE FUNCTION audit_chain_insert() RETURNS trigger LANGUAGE plpgsql
        SECURITY DEFINER SET search_path FROM CURRENT AS $$
    DECLARE head bytea;
    BEGIN
        SELECT hash INTO head FROM audit_chain FOR UPDATE;
        NEW.id := nextval(pg_get_serial_sequence('audit_log', 'id'));
        NEW.prev_hash := head;
        NEW.hash := sha256(head || audit_canonical(NEW.id, NEW.at, NEW.actor, NEW.action,
                                                   NEW.entity, NEW.entity_id, NEW.before,
                                                   NEW.after));
        UPDATE audit_chain SET last_id = NEW.id, hash = NEW.hash;
        RETURN NEW;
    END $$;
    CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END $$;
    CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log
        FOR EACH ROW EXECUTE FUNCTION audit_chain_insert();
    CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION audit_append_only();
    CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
    CREATE TRIGGER audit_chain_no_delete BEFORE DELETE OR TRUNCATE ON audit_chain
        FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
    -- the head moves only from the chaining trigger (depth 2: audit_log's trigger updating
    -- it), never by a direct UPDATE that would "re-anchor" a rewritten chain
    CREATE FUNCTION audit_chain_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF pg_trigger_depth() < 2 THEN
            RAISE EXCEPTION 'audit_chain moves only with an audit_log insert'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER audit_chain_only_by_insert BEFORE UPDATE ON audit_chain
        FOR EACH ROW EXECUTE FUNCTION audit_chain_guard();
    """,
)


def app_role_grants(role: str) -> str:
    """SQL (run by the owner, after `migrate`) that lets `role` run the API and the runtime
    without owning any table: it reads and writes the data, but may only SELECT and INSERT
    the audit log (no UPDATE, DELETE, TRUNCATE, no ALTER ... DISABLE TRIGGER: those need the
    owner). `role` must be a plain identifier (it is quoted)."""
    q = '"' + role.replace('"', '""') + '"'
    return f"""
    GRANT USAGE ON SCHEMA public TO {q};
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {q};
    GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {q};
    REVOKE UPDATE, DELETE, TRUNCATE ON audit_log, audit_chain FROM {q};
    """
