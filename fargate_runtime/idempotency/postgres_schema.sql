-- fargate-runtime: idempotency records in PostgreSQL, schema version 2.
--
-- Apply it once per database, before the workers start (workers never create or migrate it):
--     fargate-runtime postgres-schema --apply        (reads FARGATE_RUNTIME_IDEMPOTENCY_POSTGRES_URL)
--     psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f postgres_schema.sql
-- Running it again is safe: it creates what is missing and replaces the functions.
-- Everything lives in one schema, fargate_runtime here; to use another, change the two lines
-- marked "-- schema" (fargate-runtime postgres-schema --schema NAME --print does it for you).
--
-- What the workers' database role needs: USAGE on the schema; SELECT, INSERT, UPDATE, DELETE on
-- idempotency_records and idempotency_counters; USAGE on idempotency_tokens; EXECUTE on the functions (PUBLIC has it
-- unless revoked). `fargate-runtime postgres-schema --check` says which one is missing.
--
-- A record per key, written only by the functions below (each call is one round trip and one
-- transaction, or part of the caller's transaction for complete and record_step):
--
--   absent --claim--> in_progress {owner, token, fingerprint, steps}   lease_until: the lease
--                       | complete(token) --> completed {token, fingerprint, result}
--                       | release(token)  --> absent (or kept, lease ended, if it has steps)
--                       | lease ends      --> claimable again with a higher token, steps kept
--
-- expires_at is when the row is forgotten: the lease's end for a claim without steps, the
-- retention after the last step or the completion otherwise. A row past it counts as absent;
-- idempotency_cleanup() deletes such rows in bounded batches.
--
-- Times come from the database's clock (clock_timestamp()), never from the workers' clocks.
-- Rows are locked in key order in every multi-key function, so two batches can never deadlock.

BEGIN;
-- Two deployments applying the schema at once would trip over each other's CREATEs.
SELECT pg_advisory_xact_lock(7357328491003);
CREATE SCHEMA IF NOT EXISTS fargate_runtime;  -- schema
SET LOCAL search_path TO fargate_runtime, pg_catalog;  -- schema

-- Fencing tokens: one sequence, so tokens strictly increase across the claims of every key.
CREATE SEQUENCE IF NOT EXISTS idempotency_tokens AS bigint;

CREATE TABLE IF NOT EXISTS idempotency_records (
    key          text        NOT NULL PRIMARY KEY,  -- prefix:scope:key, see scoped_key()
    state        text        NOT NULL CHECK (state IN ('in_progress', 'completed')),
    owner        text        NOT NULL,
    token        bigint      NOT NULL,
    fingerprint  text        NOT NULL,
    result       bytea,                              -- completed: the result that replays
    steps        text[]      NOT NULL DEFAULT '{}',  -- recovery points, in the order recorded
    lease_until  timestamptz,                        -- in progress: the claim lives until then
    expires_at   timestamptz NOT NULL,               -- the row is forgotten after this
    updated_at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_records_expires_at
    ON idempotency_records (expires_at);

-- Small counters per key (the SQS consumer's per-message hand-back and failure counts): not
-- idempotency records, they live beside them and are forgotten ttl after their key's last change.
CREATE TABLE IF NOT EXISTS idempotency_counters (
    key         text        NOT NULL,
    field       text        NOT NULL,
    value       bigint      NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (key, field)
);
CREATE INDEX IF NOT EXISTS idempotency_counters_expires_at
    ON idempotency_counters (expires_at);

CREATE OR REPLACE FUNCTION idempotency_schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT 2 $$;

-- Claim every key. o_status: 1 acquired (o_token is ours), 2 completed (o_token and o_result
-- of the completing claim), 3 in progress elsewhere, 4 same key with another fingerprint.
-- A key repeated in one call is claimed once; later occurrences are only classified. A live
-- claim of this very owner, same fingerprint, is this call's own (an earlier try whose reply was
-- lost: owner ids name one attempt, see owners.py): acquired again with its token, its lease
-- restarted. Only a key's first occurrence in the call is recognised so. p_owners names each
-- request's own owner (an SQS delivery's, see delivery_owner); NULL or '' there means p_owner.
DROP FUNCTION IF EXISTS idempotency_claim(text[], text[], text, bigint);  -- schema version 1
CREATE OR REPLACE FUNCTION idempotency_claim(
    p_keys text[], p_fingerprints text[], p_owners text[], p_owner text, p_lease_ms bigint
) RETURNS TABLE (o_index integer, o_status smallint, o_token bigint, o_result bytea)
LANGUAGE plpgsql SET search_path FROM CURRENT SET lock_timeout = '2s' AS $$
DECLARE
    v_lease interval := p_lease_ms * interval '1 millisecond';
    v_now timestamptz;
    v_token bigint;
    v_seen text[] := '{}';
    v_item record;
    v_row record;
    v_owner text;
BEGIN
    FOR v_item IN
        SELECT k.key, k.fingerprint, k.owner, k.n
        FROM unnest(p_keys, p_fingerprints, p_owners)
             WITH ORDINALITY AS k(key, fingerprint, owner, n)
        ORDER BY k.key, k.n
    LOOP
        v_owner := COALESCE(NULLIF(v_item.owner, ''), p_owner);
        o_index := v_item.n;
        o_status := 3;
        o_token := NULL;
        o_result := NULL;
        IF NOT v_item.key = ANY (v_seen) THEN
            v_seen := v_seen || v_item.key;
            FOR v_attempt IN 1..2 LOOP
                v_now := clock_timestamp();
                -- A new key, the usual case: one insert.
                INSERT INTO idempotency_records AS r
                    (key, state, owner, token, fingerprint, lease_until, expires_at, updated_at)
                VALUES (v_item.key, 'in_progress', v_owner, nextval('idempotency_tokens'),
                        v_item.fingerprint, v_now + v_lease, v_now + v_lease, v_now)
                ON CONFLICT (key) DO NOTHING
                RETURNING r.token INTO v_token;
                IF FOUND THEN
                    o_status := 1;
                    o_token := v_token;
                    EXIT;
                END IF;
                -- Take the record over when it is forgotten, or when its lease ended (its
                -- recovery points stay), with a new, higher token; or restart the lease of our
                -- own live claim, keeping its token (the only live row the WHERE lets through).
                UPDATE idempotency_records AS r SET
                    state = 'in_progress',
                    owner = v_owner,
                    token = CASE WHEN r.expires_at > v_now AND r.lease_until > v_now
                                 THEN r.token ELSE nextval('idempotency_tokens') END,
                    fingerprint = v_item.fingerprint,
                    result = NULL,
                    steps = CASE WHEN r.expires_at > v_now THEN r.steps ELSE '{}' END,
                    lease_until = v_now + v_lease,
                    expires_at = GREATEST(r.expires_at, v_now + v_lease),
                    updated_at = v_now
                WHERE r.key = v_item.key
                  AND (r.expires_at <= v_now
                       OR (r.state = 'in_progress' AND r.fingerprint = v_item.fingerprint
                           AND (r.lease_until <= v_now OR r.owner = v_owner)))
                RETURNING r.token INTO v_token;
                IF FOUND THEN
                    o_status := 1;
                    o_token := v_token;
                    EXIT;
                END IF;
                SELECT r.state, r.token, r.fingerprint, r.result INTO v_row
                FROM idempotency_records AS r WHERE r.key = v_item.key;
                IF FOUND THEN
                    IF v_row.fingerprint <> v_item.fingerprint THEN
                        o_status := 4;
                    ELSIF v_row.state = 'completed' THEN
                        o_status := 2;
                        o_token := v_row.token;
                        o_result := v_row.result;
                    END IF;
                    EXIT;
                END IF;
                -- Deleted between our statements (a release, the cleanup): try once more.
            END LOOP;
        ELSE
            SELECT r.state, r.token, r.fingerprint, r.result INTO v_row
            FROM idempotency_records AS r WHERE r.key = v_item.key;
            IF FOUND AND v_row.fingerprint <> v_item.fingerprint THEN
                o_status := 4;
            ELSIF FOUND AND v_row.state = 'completed' THEN
                o_status := 2;
                o_token := v_row.token;
                o_result := v_row.result;
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Complete claims still ours (token matches, lease live) with their results; true where done.
-- Called by the store, or inside the handler's own transaction: then the handler's writes and
-- the completion commit together. The same token completing again answers true, changing nothing.
CREATE OR REPLACE FUNCTION idempotency_complete(
    p_keys text[], p_tokens bigint[], p_results bytea[], p_retention_ms bigint
) RETURNS TABLE (o_index integer, o_done boolean)
LANGUAGE plpgsql SET search_path FROM CURRENT SET lock_timeout = '2s' AS $$
DECLARE
    v_retention interval := p_retention_ms * interval '1 millisecond';
    v_now timestamptz;
    v_item record;
BEGIN
    FOR v_item IN
        SELECT k.key, k.token, k.result, k.n
        FROM unnest(p_keys, p_tokens, p_results) WITH ORDINALITY AS k(key, token, result, n)
        ORDER BY k.key, k.n
    LOOP
        v_now := clock_timestamp();
        o_index := v_item.n;
        UPDATE idempotency_records AS r SET
            state = 'completed', result = v_item.result, steps = '{}', lease_until = NULL,
            expires_at = v_now + v_retention, updated_at = v_now
        WHERE r.key = v_item.key AND r.token = v_item.token
          AND r.state = 'in_progress' AND r.lease_until > v_now;
        o_done := FOUND OR EXISTS (
            SELECT 1 FROM idempotency_records AS r
            WHERE r.key = v_item.key AND r.token = v_item.token
              AND r.state = 'completed' AND r.expires_at > v_now);
        RETURN NEXT;
    END LOOP;
END
$$;

-- Give back claims still ours: deleted, or kept with their lease ended when they have recovery
-- points (the next claim resumes from them). True where released.
CREATE OR REPLACE FUNCTION idempotency_release(p_keys text[], p_tokens bigint[])
RETURNS TABLE (o_index integer, o_done boolean)
LANGUAGE plpgsql SET search_path FROM CURRENT SET lock_timeout = '2s' AS $$
DECLARE
    v_now timestamptz;
    v_item record;
BEGIN
    FOR v_item IN
        SELECT k.key, k.token, k.n
        FROM unnest(p_keys, p_tokens) WITH ORDINALITY AS k(key, token, n)
        ORDER BY k.key, k.n
    LOOP
        v_now := clock_timestamp();
        o_index := v_item.n;
        DELETE FROM idempotency_records AS r
        WHERE r.key = v_item.key AND r.token = v_item.token AND r.state = 'in_progress'
          AND r.lease_until > v_now AND cardinality(r.steps) = 0;
        o_done := FOUND;
        IF NOT o_done THEN
            UPDATE idempotency_records AS r SET lease_until = v_now, updated_at = v_now
            WHERE r.key = v_item.key AND r.token = v_item.token AND r.state = 'in_progress'
              AND r.lease_until > v_now;
            o_done := FOUND;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Extend leases still ours to p_lease_ms from now; true where renewed.
CREATE OR REPLACE FUNCTION idempotency_renew(p_keys text[], p_tokens bigint[], p_lease_ms bigint)
RETURNS TABLE (o_index integer, o_done boolean)
LANGUAGE plpgsql SET search_path FROM CURRENT SET lock_timeout = '2s' AS $$
DECLARE
    v_lease interval := p_lease_ms * interval '1 millisecond';
    v_now timestamptz;
    v_item record;
BEGIN
    FOR v_item IN
        SELECT k.key, k.token, k.n
        FROM unnest(p_keys, p_tokens) WITH ORDINALITY AS k(key, token, n)
        ORDER BY k.key, k.n
    LOOP
        v_now := clock_timestamp();
        o_index := v_item.n;
        UPDATE idempotency_records AS r SET
            lease_until = v_now + v_lease,
            expires_at = GREATEST(r.expires_at, v_now + v_lease),
            updated_at = v_now
        WHERE r.key = v_item.key AND r.token = v_item.token
          AND r.state = 'in_progress' AND r.lease_until > v_now;
        o_done := FOUND;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Record a recovery point of a claim still ours, inside the handler's transaction (its writes
-- and the step commit together). 1 recorded, 2 recorded before, 0 lease lost.
CREATE OR REPLACE FUNCTION idempotency_record_step(
    p_key text, p_token bigint, p_step text, p_retention_ms bigint
) RETURNS smallint
LANGUAGE plpgsql SET search_path FROM CURRENT SET lock_timeout = '2s' AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_steps text[];
BEGIN
    UPDATE idempotency_records AS r SET
        steps = r.steps || p_step,
        expires_at = GREATEST(r.expires_at, v_now + p_retention_ms * interval '1 millisecond'),
        updated_at = v_now
    WHERE r.key = p_key AND r.token = p_token AND r.state = 'in_progress'
      AND r.lease_until > v_now AND NOT p_step = ANY (r.steps)
    RETURNING r.steps INTO v_steps;
    IF FOUND THEN
        RETURN 1;
    END IF;
    PERFORM 1 FROM idempotency_records AS r
    WHERE r.key = p_key AND r.token = p_token AND r.state = 'in_progress'
      AND r.lease_until > v_now AND p_step = ANY (r.steps);
    RETURN CASE WHEN FOUND THEN 2 ELSE 0 END;
END
$$;

-- The recovery points of a key still claimed by this token (NULL when the claim is lost).
CREATE OR REPLACE FUNCTION idempotency_steps(p_key text, p_token bigint) RETURNS text[]
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT r.steps FROM idempotency_records AS r
    WHERE r.key = p_key AND r.token = p_token AND r.state = 'in_progress'
      AND r.lease_until > clock_timestamp()
$$;

-- Change and read counters: each (key, field, amount) applied in order, amount 0 only reads;
-- o_counters is the key's counters after its change, as a JSON object. A change restarts the
-- key's ttl; a read leaves it. Keys are locked in key order first (advisory, transaction-long):
-- two batches never deadlock, and a key's counters never change between a change and its read.
CREATE OR REPLACE FUNCTION idempotency_count(
    p_keys text[], p_fields text[], p_amounts bigint[], p_ttl_ms bigint
) RETURNS TABLE (o_index integer, o_counters jsonb)
LANGUAGE plpgsql SET search_path FROM CURRENT SET lock_timeout = '2s' AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_ttl interval := p_ttl_ms * interval '1 millisecond';
    v_item record;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(k.key, 7357328491004))
    FROM (SELECT DISTINCT unnest(p_keys) AS key ORDER BY 1) AS k;
    FOR v_item IN
        SELECT c.key, c.field, c.amount, c.n
        FROM unnest(p_keys, p_fields, p_amounts) WITH ORDINALITY AS c(key, field, amount, n)
        ORDER BY c.n
    LOOP
        DELETE FROM idempotency_counters AS c WHERE c.key = v_item.key AND c.expires_at <= v_now;
        IF v_item.amount <> 0 THEN
            INSERT INTO idempotency_counters AS c (key, field, value, expires_at)
            VALUES (v_item.key, v_item.field, v_item.amount, v_now + v_ttl)
            ON CONFLICT (key, field) DO UPDATE SET value = c.value + EXCLUDED.value;
            UPDATE idempotency_counters AS c SET expires_at = v_now + v_ttl
            WHERE c.key = v_item.key;
        END IF;
        o_index := v_item.n;
        SELECT COALESCE(jsonb_object_agg(c.field, c.value), '{}'::jsonb) INTO o_counters
        FROM idempotency_counters AS c WHERE c.key = v_item.key;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Delete at most p_limit forgotten rows, skipping rows another transaction holds: short
-- transactions, no long locks. Returns how many went; call again while it returns p_limit.
CREATE OR REPLACE FUNCTION idempotency_cleanup(p_limit integer) RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_deleted integer;
BEGIN
    WITH doomed AS (
        SELECT r.key FROM idempotency_records AS r
        WHERE r.expires_at < clock_timestamp()
        ORDER BY r.expires_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM idempotency_records AS r USING doomed WHERE r.key = doomed.key;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    DELETE FROM idempotency_counters AS c
    WHERE (c.key, c.field) IN (
        SELECT o.key, o.field FROM idempotency_counters AS o
        WHERE o.expires_at < clock_timestamp()
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    );
    RETURN v_deleted;
END
$$;

COMMIT;
