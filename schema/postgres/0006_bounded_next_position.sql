-- turnstore schema, version 6, PostgreSQL: the next position is read with a plan that
-- stops after one row, whatever the statistics.
--
-- turnstore_claim read a conversation's next position as coalesce(max(position), -1) + 1.
-- PostgreSQL plans max() either as a backward index scan stopped after one row, or as an
-- aggregate over every message of the conversation; it picks the latter when it expects
-- few rows, as it does on a table never analyzed or analyzed while small. PL/pgSQL keeps
-- the generic plan a connection made then, so on some connections every claim read the
-- whole conversation: seen under load at 0.75 ms a claim for a conversation of about 2,000
-- messages, growing with the conversation (auto_explain, one hot conversation).
--
-- ORDER BY position DESC LIMIT 1 has no plan that reads more than one row: the index on
-- (conversation_id, position) gives the order, so no plan sorts. turnstore_claim of
-- version 3 is replaced with a copy that reads the next position so, its only change.
-- tests/test_plans.py now flags any read of a whole conversation on the write path.

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
) RETURNS turnstore_claim_answer LANGUAGE plpgsql AS $$
DECLARE
    v_lease    interval := make_interval(secs => p_lease_seconds);
    v_turn     text := p_turn_id;
    v_requeue  boolean := false;
    v_row      record;
    v_found    boolean := false;
    v_has_head boolean;
    v_epoch    bigint;
    v_pos      bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_key);
    IF p_retry OR NOT p_first THEN
        -- Did the attempt whose connection broke land after all? Was this waiting turn
        -- handed the conversation by the turn that ended before it?
        SELECT t.status, t.epoch INTO v_row FROM turnstore_turns t
         WHERE t.id = p_turn_id AND t.conversation_id = p_conversation_id;
        IF FOUND AND v_row.status = 'running' THEN
            v_pos := coalesce((SELECT m.position FROM turnstore_messages m
                                WHERE m.conversation_id = p_conversation_id
                                ORDER BY m.position DESC LIMIT 1), -1) + 1;
            RETURN ('claimed', p_turn_id, 'running', v_row.epoch, v_pos)::turnstore_claim_answer;
        ELSIF FOUND AND v_row.status = 'queued' AND p_retry THEN
            RETURN ('queued', p_turn_id, 'queued', 0, NULL)::turnstore_claim_answer;
        END IF;
    END IF;
    IF p_first THEN
        IF p_idempotency_key IS NOT NULL THEN
            SELECT t.id, t.status, t.content_hash INTO v_row FROM turnstore_turns t
             WHERE t.conversation_id = p_conversation_id
               AND t.idempotency_key = p_idempotency_key;
            v_found := FOUND;
            IF v_found AND v_row.content_hash <> p_content_hash THEN
                RETURN ('key_reused', v_row.id, v_row.status, 0, NULL)::turnstore_claim_answer;
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
                RETURN ('duplicate', v_row.id, v_row.status, 0, NULL)::turnstore_claim_answer;
            END IF;
            v_turn := v_row.id;  -- it gave up waiting and wrote nothing: retry it
            v_requeue := true;
        END IF;
    END IF;

    -- The head of the line: the running turn, else the oldest waiting one; and whether any
    -- live turn's lease expired (then it is taken over first).
    SELECT t.id, t.status,
           (SELECT bool_or(x.lease_expires_at < now()) FROM turnstore_turns x
             WHERE x.conversation_id = p_conversation_id
               AND x.status IN ('queued', 'running')) AS stale
      INTO v_row FROM turnstore_turns t
     WHERE t.conversation_id = p_conversation_id AND t.status IN ('queued', 'running')
     ORDER BY t.status = 'running' DESC, t.created_at, t.id LIMIT 1;
    v_has_head := FOUND;
    IF v_has_head AND v_row.stale THEN
        IF EXISTS (SELECT 1 FROM turnstore_turns t
                     JOIN turnstore_staged_steps s ON s.turn_id = t.id AND s.step = t.steps + 1
                    WHERE t.conversation_id = p_conversation_id AND t.status = 'running'
                      AND t.lease_expires_at < now()) THEN
            RETURN ('recover', v_turn, NULL, 0, NULL)::turnstore_claim_answer;
        END IF;
        WITH expired AS (
            UPDATE turnstore_turns t
               SET status = CASE t.status WHEN 'running' THEN 'expired' ELSE 'refused' END,
                   ended_at = now(), pending_content = NULL,
                   error = coalesce(t.error, 'lease expired: its owner stopped renewing it')
             WHERE t.conversation_id = p_conversation_id AND t.status IN ('queued', 'running')
               AND t.lease_expires_at < now()
            RETURNING t.id
        )
        DELETE FROM turnstore_staged_steps s USING expired e WHERE s.turn_id = e.id;
        SELECT t.id, t.status INTO v_row FROM turnstore_turns t
         WHERE t.conversation_id = p_conversation_id AND t.status IN ('queued', 'running')
         ORDER BY t.status = 'running' DESC, t.created_at, t.id LIMIT 1;
        v_has_head := FOUND;
    END IF;

    IF v_has_head AND NOT (v_row.id = v_turn AND v_row.status = 'queued') THEN
        IF p_first AND p_fail_when_busy THEN
            RETURN ('busy', v_turn, NULL, 0, NULL)::turnstore_claim_answer;
        END IF;
        IF NOT p_first THEN
            UPDATE turnstore_turns t SET lease_expires_at = now() + v_lease
             WHERE t.id = v_turn AND t.conversation_id = p_conversation_id
               AND t.status = 'queued';
            RETURN (CASE WHEN FOUND THEN 'queued' ELSE 'busy' END, v_turn, 'queued', 0,
                    NULL)::turnstore_claim_answer;
        END IF;
        IF v_requeue THEN
            UPDATE turnstore_turns t
               SET status = 'queued', ended_at = NULL, error = NULL, lease_owner = p_owner,
                   lease_expires_at = now() + v_lease, created_at = clock_timestamp(),
                   pending_content = p_content::jsonb
             WHERE t.id = v_turn AND t.conversation_id = p_conversation_id
               AND t.status = 'refused';
        ELSE
            INSERT INTO turnstore_turns (id, conversation_id, idempotency_key, content_hash,
                                         status, epoch, lease_owner, lease_expires_at,
                                         created_at, pending_content)
            VALUES (v_turn, p_conversation_id, p_idempotency_key, p_content_hash, 'queued', 0,
                    p_owner, now() + v_lease, clock_timestamp(), p_content::jsonb);
        END IF;
        RETURN ('queued', v_turn, 'queued', 0, NULL)::turnstore_claim_answer;
    END IF;

    UPDATE turnstore_conversations c SET epoch = c.epoch + 1 WHERE c.id = p_conversation_id
    RETURNING c.epoch INTO v_epoch;
    IF NOT FOUND THEN  -- the conversation's first turn
        INSERT INTO turnstore_conversations AS c (id, epoch) VALUES (p_conversation_id, 1)
        RETURNING c.epoch INTO v_epoch;
    END IF;
    IF p_first AND NOT v_requeue THEN
        INSERT INTO turnstore_turns (id, conversation_id, idempotency_key, content_hash, status,
                                     epoch, lease_owner, lease_expires_at, created_at,
                                     started_at)
        VALUES (v_turn, p_conversation_id, p_idempotency_key, p_content_hash, 'running',
                v_epoch, p_owner, now() + v_lease, clock_timestamp(), clock_timestamp());
    ELSE
        UPDATE turnstore_turns t
           SET status = 'running', epoch = v_epoch, started_at = now(), ended_at = NULL,
               error = NULL, lease_owner = p_owner, lease_expires_at = now() + v_lease,
               pending_content = NULL
         WHERE t.id = v_turn AND t.conversation_id = p_conversation_id
           AND t.status IN ('queued', 'refused');
    END IF;
    v_pos := coalesce((SELECT m.position FROM turnstore_messages m
                        WHERE m.conversation_id = p_conversation_id
                        ORDER BY m.position DESC LIMIT 1), -1) + 1;
    INSERT INTO turnstore_messages (conversation_id, position, role, turn_id, step,
                                    step_position, tool_call_count, content)
    VALUES (p_conversation_id, v_pos, 'user', v_turn, 0, v_pos, 0, p_content::jsonb);
    RETURN ('claimed', v_turn, 'running', v_epoch, v_pos + 1)::turnstore_claim_answer;
END $$;
