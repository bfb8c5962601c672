-- turnstore schema, version 2, PostgreSQL: plans that stay fast before the first ANALYZE.
--
-- Until autovacuum first analyzes the tables, the planner cannot tell apart indexes that
-- start with the same column, and a connection keeps the generic plans it made then (the
-- foreign-key checks' plans for as long as it lives). Version 1 left it choices that cost
-- a scan of the whole conversation per lookup: the deferred pairing checks and the
-- next-position read could use the (conversation_id, tool_call_id) index, filtering on
-- position; a lookup by idempotency key or by turn id could use the content-hash index;
-- a lookup by turn id and status could walk every running turn of every conversation.
-- A fresh database (or a benchmark's) ran every write with those plans.
--
-- Now an index serves only the lookups it was made for, whatever the statistics say:
--   * the uniqueness of tool call ids and of idempotency keys is kept by partial unique
--     indexes that only a query naming a call id (or a key) can use; the content-hash
--     index covers keyless submits only, the only ones that look it up;
--   * every lookup of a turn by id also names its conversation, so that the partial
--     indexes on status, whose leading column is conversation_id, are bounded too.
-- tests/test_plans.py checks every statement a write runs, with generic plans on a fresh
-- schema. Uniqueness is unchanged (NULLs were never equal).

ALTER TABLE turnstore_messages
    DROP CONSTRAINT turnstore_messages_conversation_id_tool_call_id_key;
CREATE UNIQUE INDEX turnstore_messages_call_ids
    ON turnstore_messages (conversation_id, tool_call_id) WHERE tool_call_id IS NOT NULL;

ALTER TABLE turnstore_turns
    DROP CONSTRAINT turnstore_turns_conversation_id_idempotency_key_key;
CREATE UNIQUE INDEX turnstore_turns_by_key
    ON turnstore_turns (conversation_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

DROP INDEX turnstore_turns_by_content;
CREATE INDEX turnstore_turns_by_content
    ON turnstore_turns (conversation_id, content_hash) WHERE idempotency_key IS NULL;

-- The functions of version 1, with every lookup of a turn naming its conversation.

CREATE OR REPLACE FUNCTION turnstore_commit_step(
    p_lock_key        bigint,
    p_conversation_id text,
    p_turn_id         text,
    p_epoch           bigint,
    p_lease_seconds   double precision,
    p_step            integer,
    p_position        bigint,
    p_content         text,        -- JSON texts: the caller has validated and encoded them
    p_call_ids        text[],
    p_tool_names      text[],
    p_arguments       text[],
    p_call_data       text[],
    p_results         text[],
    p_is_error        boolean[]
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_calls  integer := coalesce(cardinality(p_call_ids), 0);
    v_status text;
    v_steps  integer;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_key);
    UPDATE turnstore_turns
       SET steps = p_step,
           lease_expires_at = now() + make_interval(secs => p_lease_seconds)
     WHERE id = p_turn_id AND conversation_id = p_conversation_id AND epoch = p_epoch
       AND status = 'running' AND steps = p_step - 1;
    IF NOT FOUND THEN
        SELECT status, steps INTO v_status, v_steps FROM turnstore_turns WHERE id = p_turn_id;
        RETURN coalesce(v_status, 'missing') || ':' || coalesce(v_steps, -1);
    END IF;
    INSERT INTO turnstore_messages
        (conversation_id, position, role, turn_id, step, step_position, tool_call_count,
         content, tool_call_id, tool_name, tool_arguments, tool_call_data, is_error)
    SELECT p_conversation_id, p_position, 'assistant', p_turn_id, p_step, p_position,
           v_calls, p_content::jsonb, NULL, NULL, NULL, NULL, false
    UNION ALL
    SELECT p_conversation_id, p_position + u.ord, 'tool', p_turn_id, p_step, p_position,
           v_calls, u.result::jsonb, u.call_id, u.tool_name, u.arguments::jsonb,
           u.call_data::jsonb, u.is_error
      FROM unnest(p_call_ids, p_tool_names, p_arguments, p_call_data, p_results, p_is_error)
           WITH ORDINALITY AS u(call_id, tool_name, arguments, call_data, result, is_error, ord);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION turnstore_claim(
    p_lock_key        bigint,
    p_conversation_id text,
    p_turn_id         text,
    p_idempotency_key text,
    p_content_hash    text,
    p_content         text,
    p_owner           text,
    p_lease_seconds   double precision,
    p_window_seconds  double precision,
    p_fail_when_busy  boolean,
    p_first           boolean,
    p_retry           boolean
) RETURNS TABLE (decision text, turn_id text, status text, epoch bigint, next_position bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_lease   interval := make_interval(secs => p_lease_seconds);
    v_turn    text := p_turn_id;
    v_requeue boolean := false;
    v_row     record;
    v_found   boolean := false;
    v_epoch   bigint;
    v_pos     bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_key);
    IF p_retry THEN  -- did the attempt whose connection broke commit after all?
        SELECT t.status, t.epoch INTO v_row FROM turnstore_turns t
         WHERE t.id = p_turn_id AND t.conversation_id = p_conversation_id;
        IF FOUND AND v_row.status = 'queued' THEN
            RETURN QUERY SELECT 'queued', p_turn_id, 'queued', 0::bigint, NULL::bigint;
            RETURN;
        ELSIF FOUND AND v_row.status = 'running' THEN
            RETURN QUERY SELECT 'claimed', p_turn_id, 'running', v_row.epoch,
                (SELECT coalesce(max(m.position), -1) + 1 FROM turnstore_messages m
                  WHERE m.conversation_id = p_conversation_id);
            RETURN;
        END IF;
    END IF;
    IF p_first THEN
        INSERT INTO turnstore_conversations (id) VALUES (p_conversation_id)
        ON CONFLICT (id) DO NOTHING;
        IF p_idempotency_key IS NOT NULL THEN
            SELECT t.id, t.status, t.content_hash INTO v_row FROM turnstore_turns t
             WHERE t.conversation_id = p_conversation_id
               AND t.idempotency_key = p_idempotency_key;
            v_found := FOUND;
            IF v_found AND v_row.content_hash <> p_content_hash THEN
                RETURN QUERY SELECT 'key_reused', v_row.id, v_row.status, 0::bigint, NULL::bigint;
                RETURN;
            END IF;
        ELSIF p_window_seconds > 0 THEN
            SELECT t.id, t.status INTO v_row FROM turnstore_turns t
             WHERE t.conversation_id = p_conversation_id AND t.content_hash = p_content_hash
               AND t.idempotency_key IS NULL
               AND (t.status IN ('queued', 'running')
                    OR (t.status <> 'refused'
                        AND t.ended_at > now() - make_interval(secs => p_window_seconds)))
             ORDER BY t.created_at DESC LIMIT 1;
            v_found := FOUND;
        END IF;
        IF v_found THEN
            IF v_row.status <> 'refused' THEN
                RETURN QUERY SELECT 'duplicate', v_row.id, v_row.status, 0::bigint, NULL::bigint;
                RETURN;
            END IF;
            v_turn := v_row.id;  -- it gave up waiting and wrote nothing: retry it
            v_requeue := true;
        END IF;
    END IF;

    IF EXISTS (SELECT 1 FROM turnstore_turns t
                 JOIN turnstore_staged_steps s ON s.turn_id = t.id AND s.step = t.steps + 1
                WHERE t.conversation_id = p_conversation_id AND t.status = 'running'
                  AND t.lease_expires_at < now()) THEN
        RETURN QUERY SELECT 'recover', v_turn, NULL::text, 0::bigint, NULL::bigint;
        RETURN;
    END IF;
    WITH expired AS (
        UPDATE turnstore_turns t
           SET status = CASE t.status WHEN 'running' THEN 'expired' ELSE 'refused' END,
               ended_at = now(),
               error = coalesce(t.error, 'lease expired: its owner stopped renewing it')
         WHERE t.conversation_id = p_conversation_id AND t.status IN ('queued', 'running')
           AND t.lease_expires_at < now()
        RETURNING t.id
    )
    DELETE FROM turnstore_staged_steps s USING expired e WHERE s.turn_id = e.id;

    SELECT t.id, t.status INTO v_row FROM turnstore_turns t
     WHERE t.conversation_id = p_conversation_id AND t.status IN ('queued', 'running')
     ORDER BY t.status = 'running' DESC, t.created_at, t.id LIMIT 1;
    IF FOUND AND NOT (v_row.id = v_turn AND v_row.status = 'queued') THEN
        IF p_first AND p_fail_when_busy THEN
            RETURN QUERY SELECT 'busy', v_turn, NULL::text, 0::bigint, NULL::bigint;
            RETURN;
        END IF;
        IF NOT p_first THEN
            UPDATE turnstore_turns t SET lease_expires_at = now() + v_lease
             WHERE t.id = v_turn AND t.conversation_id = p_conversation_id
               AND t.status = 'queued';
            RETURN QUERY SELECT CASE WHEN FOUND THEN 'queued' ELSE 'busy' END, v_turn,
                                'queued', 0::bigint, NULL::bigint;
            RETURN;
        END IF;
        IF v_requeue THEN
            UPDATE turnstore_turns t
               SET status = 'queued', ended_at = NULL, error = NULL, lease_owner = p_owner,
                   lease_expires_at = now() + v_lease, created_at = clock_timestamp()
             WHERE t.id = v_turn AND t.conversation_id = p_conversation_id
               AND t.status = 'refused';
        ELSE
            INSERT INTO turnstore_turns (id, conversation_id, idempotency_key, content_hash,
                                         status, epoch, lease_owner, lease_expires_at,
                                         created_at)
            VALUES (v_turn, p_conversation_id, p_idempotency_key, p_content_hash, 'queued', 0,
                    p_owner, now() + v_lease, clock_timestamp());
        END IF;
        RETURN QUERY SELECT 'queued', v_turn, 'queued', 0::bigint, NULL::bigint;
        RETURN;
    END IF;

    UPDATE turnstore_conversations c SET epoch = c.epoch + 1 WHERE c.id = p_conversation_id
    RETURNING c.epoch INTO v_epoch;
    IF p_first AND NOT v_requeue THEN
        INSERT INTO turnstore_turns (id, conversation_id, idempotency_key, content_hash, status,
                                     epoch, lease_owner, lease_expires_at, created_at,
                                     started_at)
        VALUES (v_turn, p_conversation_id, p_idempotency_key, p_content_hash, 'running',
                v_epoch, p_owner, now() + v_lease, clock_timestamp(), clock_timestamp());
    ELSE
        UPDATE turnstore_turns t
           SET status = 'running', epoch = v_epoch, started_at = now(), ended_at = NULL,
               error = NULL, lease_owner = p_owner, lease_expires_at = now() + v_lease
         WHERE t.id = v_turn AND t.conversation_id = p_conversation_id
           AND t.status IN ('queued', 'refused');
    END IF;
    SELECT coalesce(max(m.position), -1) + 1 INTO v_pos FROM turnstore_messages m
     WHERE m.conversation_id = p_conversation_id;
    INSERT INTO turnstore_messages (conversation_id, position, role, turn_id, step,
                                    step_position, tool_call_count, content)
    VALUES (p_conversation_id, v_pos, 'user', v_turn, 0, v_pos, 0, p_content::jsonb);
    RETURN QUERY SELECT 'claimed', v_turn, 'running', v_epoch, v_pos + 1;
END $$;

CREATE OR REPLACE FUNCTION turnstore_end_turn(
    p_lock_key        bigint,
    p_conversation_id text,
    p_turn_id         text,
    p_epoch           bigint,
    p_status          text,
    p_error           text,
    p_lease_seconds   double precision,
    p_step            integer,
    p_position        bigint,
    p_content         text,
    p_call_ids        text[],
    p_tool_names      text[],
    p_arguments       text[],
    p_call_data       text[],
    p_results         text[],
    p_is_error        boolean[]
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_refused text;
    v_status  text;
    v_steps   integer;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_key);
    IF p_content IS NOT NULL THEN
        v_refused := turnstore_commit_step(p_lock_key, p_conversation_id, p_turn_id, p_epoch,
            p_lease_seconds, p_step, p_position, p_content, p_call_ids, p_tool_names,
            p_arguments, p_call_data, p_results, p_is_error);
        IF v_refused IS NOT NULL THEN
            RETURN v_refused;
        END IF;
    END IF;
    UPDATE turnstore_turns SET status = p_status, error = p_error, ended_at = now()
     WHERE id = p_turn_id AND conversation_id = p_conversation_id AND epoch = p_epoch
       AND status = 'running';
    IF NOT FOUND THEN
        SELECT status, steps INTO v_status, v_steps FROM turnstore_turns WHERE id = p_turn_id;
        RETURN coalesce(v_status, 'missing') || ':' || coalesce(v_steps, -1);
    END IF;
    DELETE FROM turnstore_staged_steps WHERE turn_id = p_turn_id;
    RETURN NULL;
END $$;
