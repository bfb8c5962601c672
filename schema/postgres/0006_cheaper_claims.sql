-- turnstore schema, version 6, PostgreSQL: claims read one row for the next position, and
-- the claims of a batch write their user messages with one statement.
--
-- 1. The next position. turnstore_claim read it as coalesce(max(position), -1) + 1.
-- PostgreSQL plans max() either as a backward index scan stopped after one row, or as an
-- aggregate over every message of the conversation; it picks the latter when it expects
-- few rows, as it does on a table never analyzed or analyzed while small. PL/pgSQL keeps
-- the generic plan a connection made then, so on some connections every claim read the
-- whole conversation: seen under load at 0.75 ms a claim for a conversation of about 2,000
-- messages, growing with the conversation (auto_explain, one hot conversation).
-- ORDER BY position DESC LIMIT 1 has no plan that reads more than one row: the index on
-- (conversation_id, position) gives the order, so no plan sorts. tests/test_plans.py
-- flags any read of a whole conversation on the write path.
--
-- 2. The user messages. Each claim that started its turn wrote its user message with an
-- INSERT of its own. A statement's set-up costs far more than the row it writes:
-- PostgreSQL reads the table's CHECK constraints and generated columns back from their
-- stored form and prepares them, opens the indexes and queues the deferred checks, for
-- every execution (perf on a backend applying one write at a time: 7% of its time in
-- stringToNode alone). turnstore_apply now collects the user messages of its claims and
-- writes them after the last claim with one INSERT (turnstore_write_user_messages).
-- Nothing of the batch reads the messages after the claims but a claim's next position,
-- and only a turn's own poll or retry reads it; a claim on a conversation whose message is
-- still to be written writes the collected messages first (tests/test_apply.py). The
-- rows, their constraints and the answers are the same as before. turnstore_claim takes
-- p_write_message (true by default: it writes the message itself, as before), and its
-- answer says whether it left the message to its caller (message_left).

DROP FUNCTION turnstore_apply(turnstore_write[]);
DROP FUNCTION turnstore_claim(bigint, text, text, text, text, text, text, double precision,
                              double precision, boolean, boolean, boolean);

-- PL/pgSQL, not SQL: PL/pgSQL keeps the INSERT's plan for the session, where a SQL
-- function plans its statement again at every call.
CREATE FUNCTION turnstore_write_user_messages(
    p_conversations text[],
    p_positions     bigint[],
    p_turns         text[],
    p_contents      text[]
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO turnstore_messages (conversation_id, position, role, turn_id, step,
                                    step_position, tool_call_count, content)
    SELECT u.conversation_id, u.position, 'user', u.turn_id, 0, u.position, 0,
           u.content::jsonb
      FROM unnest(p_conversations, p_positions, p_turns, p_contents)
           AS u(conversation_id, position, turn_id, content);
END $$;

-- An answer says whether the claim started its turn and left the user message to its
-- caller (only when the caller asked it to: p_write_message false).
ALTER TYPE turnstore_claim_answer ADD ATTRIBUTE message_left boolean;

-- turnstore_claim of version 3, with both changes: the next position read with ORDER BY
-- ... LIMIT 1, and p_write_message.
CREATE FUNCTION turnstore_claim(
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
    p_retry           boolean,
    p_write_message   boolean DEFAULT true  -- false: the caller writes the user message
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
            RETURN ('claimed', p_turn_id, 'running', v_row.epoch, v_pos, false)::turnstore_claim_answer;
        ELSIF FOUND AND v_row.status = 'queued' AND p_retry THEN
            RETURN ('queued', p_turn_id, 'queued', 0, NULL, false)::turnstore_claim_answer;
        END IF;
    END IF;
    IF p_first THEN
        IF p_idempotency_key IS NOT NULL THEN
            SELECT t.id, t.status, t.content_hash INTO v_row FROM turnstore_turns t
             WHERE t.conversation_id = p_conversation_id
               AND t.idempotency_key = p_idempotency_key;
            v_found := FOUND;
            IF v_found AND v_row.content_hash <> p_content_hash THEN
                RETURN ('key_reused', v_row.id, v_row.status, 0, NULL, false)::turnstore_claim_answer;
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
                RETURN ('duplicate', v_row.id, v_row.status, 0, NULL, false)::turnstore_claim_answer;
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
            RETURN ('recover', v_turn, NULL, 0, NULL, false)::turnstore_claim_answer;
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
            RETURN ('busy', v_turn, NULL, 0, NULL, false)::turnstore_claim_answer;
        END IF;
        IF NOT p_first THEN
            UPDATE turnstore_turns t SET lease_expires_at = now() + v_lease
             WHERE t.id = v_turn AND t.conversation_id = p_conversation_id
               AND t.status = 'queued';
            RETURN (CASE WHEN FOUND THEN 'queued' ELSE 'busy' END, v_turn, 'queued', 0,
                    NULL, false)::turnstore_claim_answer;
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
        RETURN ('queued', v_turn, 'queued', 0, NULL, false)::turnstore_claim_answer;
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
    IF p_write_message THEN
        INSERT INTO turnstore_messages (conversation_id, position, role, turn_id, step,
                                        step_position, tool_call_count, content)
        VALUES (p_conversation_id, v_pos, 'user', v_turn, 0, v_pos, 0, p_content::jsonb);
    END IF;
    RETURN ('claimed', v_turn, 'running', v_epoch, v_pos + 1, 
                NOT p_write_message)::turnstore_claim_answer;
END $$;

-- turnstore_apply of version 3, which writes its claims' user messages with one INSERT.
CREATE FUNCTION turnstore_apply(p_writes turnstore_write[])
RETURNS TABLE (ord bigint, outcome text, turn_id text, status text, epoch bigint,
               next_position bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_fenced bigint[] := '{}';  -- steps (and ends' last steps) that passed their fence
    w        turnstore_write;
    i        bigint;
    v_claim  record;
    v_next   record;
    -- the user messages of this batch's claims, written by one INSERT at the end
    v_conversations text[] := '{}';
    v_positions     bigint[] := '{}';
    v_turns         text[] := '{}';
    v_contents      text[] := '{}';
BEGIN
    -- The loops below walk the array itself (FOREACH): a lone write, the common case when
    -- the database is idle, runs no statement but its own.
    i := 0;
    FOREACH w IN ARRAY p_writes LOOP
        IF w.kind IS NULL OR w.kind NOT IN ('claim', 'step', 'end') THEN
            RAISE EXCEPTION 'turnstore_apply: unknown write kind %', w.kind
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    IF cardinality(p_writes) = 1 THEN
        PERFORM pg_advisory_xact_lock(p_writes[1].lock_key);
    ELSE
        PERFORM pg_advisory_xact_lock(k.lock_key)
           FROM (SELECT DISTINCT u.lock_key FROM unnest(p_writes) AS u ORDER BY 1) AS k;
    END IF;

    -- Steps, and the last steps of ends: check each turn's fencing token and extend its
    -- lease, then insert the rows of every step that passed.
    FOREACH w IN ARRAY p_writes LOOP
        i := i + 1;
        CONTINUE WHEN w.kind = 'claim' OR w.content IS NULL;
        UPDATE turnstore_turns t
           SET steps = w.step,
               lease_expires_at = now() + make_interval(secs => w.lease_seconds)
         WHERE t.id = w.turn_id AND t.conversation_id = w.conversation_id
           AND t.epoch = w.epoch AND t.status = 'running' AND t.steps = w.step - 1;
        IF FOUND THEN
            v_fenced := v_fenced || i;
        END IF;
    END LOOP;
    IF cardinality(v_fenced) > 0 THEN
        INSERT INTO turnstore_messages
            (conversation_id, position, role, turn_id, step, step_position,
             tool_call_count, content, tool_call_id, tool_name, tool_arguments,
             tool_call_data, is_error)
        SELECT s.conversation_id, s."position" + r.offs, r.role, s.turn_id, s.step,
               s."position", coalesce(cardinality(s.call_ids), 0), r.content::jsonb,
               r.call_id, r.tool_name, r.arguments::jsonb, r.call_data::jsonb,
               coalesce(r.is_error, false)
          FROM unnest(p_writes) WITH ORDINALITY AS s
         CROSS JOIN LATERAL (
                SELECT 0::bigint AS offs, 'assistant' AS role, s.content AS content,
                       NULL::text AS call_id, NULL::text AS tool_name,
                       NULL::text AS arguments, NULL::text AS call_data,
                       NULL::boolean AS is_error
                UNION ALL
                SELECT c.ord, 'tool', c.result, c.call_id, c.tool_name, c.arguments,
                       c.call_data, c.is_error
                  FROM unnest(s.call_ids, s.tool_names, s.arguments, s.call_data,
                              s.results, s.is_error)
                       WITH ORDINALITY AS c(call_id, tool_name, arguments, call_data,
                                            result, is_error, ord)
               ) AS r
         WHERE s.ordinality = ANY (v_fenced);
    END IF;

    -- Steps and ends: answer each; an end whose last step (if any) was written ends now.
    i := 0;
    FOREACH w IN ARRAY p_writes LOOP
        i := i + 1;
        CONTINUE WHEN w.kind = 'claim';
        ord := i;
        turn_id := NULL; status := NULL; epoch := NULL; next_position := NULL;
        outcome := NULL;
        IF w.kind = 'end' AND (w.content IS NULL OR i = ANY (v_fenced)) THEN
            UPDATE turnstore_turns t SET status = w.status, error = w.error, ended_at = now()
             WHERE t.id = w.turn_id AND t.conversation_id = w.conversation_id
               AND t.epoch = w.epoch AND t.status = 'running';
            IF FOUND THEN
                DELETE FROM turnstore_staged_steps s WHERE s.turn_id = w.turn_id;
                -- Hand over to the oldest waiting turn whose submitter is still there.
                SELECT t.id, t.pending_content::text AS content, t.lease_owner INTO v_next
                  FROM turnstore_turns t
                 WHERE t.conversation_id = w.conversation_id AND t.status = 'queued'
                   AND t.lease_expires_at >= now() AND t.pending_content IS NOT NULL
                 ORDER BY t.created_at, t.id LIMIT 1;
                IF FOUND THEN
                    v_claim := turnstore_claim(w.lock_key, w.conversation_id, v_next.id,
                        NULL, NULL, v_next.content, v_next.lease_owner, w.lease_seconds, 0,
                        false, false, false);
                    IF v_claim.decision = 'claimed' THEN
                        turn_id := v_claim.turn_id;
                        status := v_claim.status;
                        epoch := v_claim.epoch;
                        next_position := v_claim.next_position;
                    END IF;
                END IF;
            ELSE
                outcome := 'refused';
            END IF;
        ELSIF NOT i = ANY (v_fenced) THEN
            outcome := 'refused';
        END IF;
        IF outcome IS NOT NULL THEN  -- why: '<status>:<steps>' of the turn as it is
            SELECT coalesce(max(t.status), 'missing') || ':' || coalesce(max(t.steps), -1)
              INTO outcome FROM turnstore_turns t
             WHERE t.id = w.turn_id AND t.conversation_id = w.conversation_id;
        END IF;
        RETURN NEXT;
    END LOOP;

    -- Claims, in the order they were sent. A claim that starts its turn leaves its user
    -- message to the INSERT below; a claim on a conversation with a message still to
    -- write (none does but a turn's own poll or retry, which reads the next position)
    -- writes those first.
    i := 0;
    FOREACH w IN ARRAY p_writes LOOP
        i := i + 1;
        CONTINUE WHEN w.kind <> 'claim';
        IF w.conversation_id = ANY (v_conversations) THEN
            PERFORM turnstore_write_user_messages(v_conversations, v_positions, v_turns,
                                                  v_contents);
            v_conversations := '{}'; v_positions := '{}'; v_turns := '{}';
            v_contents := '{}';
        END IF;
        v_claim := turnstore_claim(w.lock_key, w.conversation_id, w.turn_id,
            w.idempotency_key, w.content_hash, w.content, w.owner, w.lease_seconds,
            w.window_seconds, w.fail_when_busy, w.first, w.retry, false);
        IF v_claim.message_left THEN  -- its turn started: its message goes below
            v_conversations := v_conversations || w.conversation_id;
            v_positions := v_positions || (v_claim.next_position - 1);
            v_turns := v_turns || v_claim.turn_id;
            v_contents := v_contents || w.content;
        END IF;
        ord := i;
        outcome := v_claim.decision;
        turn_id := v_claim.turn_id;
        status := v_claim.status;
        epoch := v_claim.epoch;
        next_position := v_claim.next_position;
        RETURN NEXT;
    END LOOP;
    IF cardinality(v_conversations) > 0 THEN
        PERFORM turnstore_write_user_messages(v_conversations, v_positions, v_turns,
                                              v_contents);
    END IF;
END $$;
