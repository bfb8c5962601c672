-- turnstore schema, version 3, PostgreSQL: group commit.
--
-- A process sends the writes its turns make at the same moment — claims, step commits and
-- turn ends, on any conversations — as ONE call: one round trip, one transaction, one WAL
-- flush, and (for steps and ends) one statement for all of them, instead of one each.
-- Every write is decided as if it ran alone, by the rules of version 1: its
-- conversation's advisory lock is held, its fencing token is checked, and its rows meet
-- the same constraints, the deferred pairing checks included. Only the transaction is
-- shared. If any write raises, the whole batch rolls back; the library then applies its
-- writes one by one, so that only the write at fault fails.
--
-- The writes of one batch were all sent before any of them was answered, so any order of
-- them is an order in which they could have arrived. The batch first takes every advisory
-- lock it needs in ascending key order (two batches never wait for each other in a
-- cycle), then applies the steps (every turn's last step of an end included), then the
-- ends, then the claims, in the order sent (so that a queue stays first come, first
-- served, and a claim sees the turn that ended in the same batch as ended).
--
-- A turn that ends also hands its conversation over, in the same transaction, to the next
-- turn waiting in line: that turn starts (its user message is written) without waiting
-- for its submitter to poll. A queued turn therefore keeps its user message until it
-- starts (pending_content). Its submitter learns it at once if it is in the process that
-- ended the turn, else at its next poll.

DROP FUNCTION turnstore_claim(bigint, text, text, text, text, text, text, double precision,
                              double precision, boolean, boolean, boolean);

ALTER TABLE turnstore_turns ADD COLUMN pending_content jsonb
    CHECK (pending_content IS NULL OR jsonb_typeof(pending_content) = 'array');
COMMENT ON COLUMN turnstore_turns.pending_content IS
    'The user message of a queued turn, written to history when the turn starts.';

CREATE TYPE turnstore_claim_answer AS (
    decision      text,
    turn_id       text,
    status        text,
    epoch         bigint,
    next_position bigint
);

-- turnstore_claim of version 1, changed in five ways:
--   * every lookup of a turn names its conversation (see 0002_stable_plans.sql);
--   * it answers one turnstore_claim_answer (cheaper to call than a set-returning
--     function);
--   * a queued turn keeps its user message (pending_content);
--   * a poll (not p_first) by a turn that was handed the conversation answers 'claimed';
--   * the common case runs fewer statements: the live turns are read once, and the
--     conversation row is created when its first turn starts.
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
            SELECT coalesce(max(m.position), -1) + 1 INTO v_pos FROM turnstore_messages m
             WHERE m.conversation_id = p_conversation_id;
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
    SELECT coalesce(max(m.position), -1) + 1 INTO v_pos FROM turnstore_messages m
     WHERE m.conversation_id = p_conversation_id;
    INSERT INTO turnstore_messages (conversation_id, position, role, turn_id, step,
                                    step_position, tool_call_count, content)
    VALUES (p_conversation_id, v_pos, 'user', v_turn, 0, v_pos, 0, p_content::jsonb);
    RETURN ('claimed', v_turn, 'running', v_epoch, v_pos + 1)::turnstore_claim_answer;
END $$;

-- Superseded by turnstore_apply, which writes steps and ends (and hands over).
DROP FUNCTION turnstore_commit_step(bigint, text, text, bigint, double precision, integer,
                                    bigint, text, text[], text[], text[], text[], text[],
                                    boolean[]);
DROP FUNCTION turnstore_end_turn(bigint, text, text, bigint, text, text, double precision,
                                 integer, bigint, text, text[], text[], text[], text[],
                                 text[], boolean[]);

CREATE TYPE turnstore_write AS (
    kind             text,              -- 'claim', 'step' or 'end'
    lock_key         bigint,
    conversation_id  text,
    turn_id          text,
    epoch            bigint,            -- step, end: the turn's fencing token
    lease_seconds    double precision,  -- a claim's, a step's, and the hand-over's
    -- claim: the other arguments of turnstore_claim (content below is the user message)
    idempotency_key  text,
    content_hash     text,
    owner            text,
    window_seconds   double precision,
    fail_when_busy   boolean,
    first            boolean,
    retry            boolean,
    -- step, and an end's last step (content NULL for none): turnstore_commit_step's
    step             integer,
    "position"       bigint,
    content          text,
    call_ids         text[],
    tool_names       text[],
    arguments        text[],
    call_data        text[],
    results          text[],
    is_error         boolean[],
    -- end: the status the turn ends with, and why
    status           text,
    error            text
);

-- One row per write, ``ord`` its 1-based place in p_writes. ``outcome`` is, for a claim,
-- turnstore_claim's decision (with turn_id, status, epoch, next_position); for a step or
-- an end, NULL when it was written, else '<turn status>:<committed steps>' having written
-- nothing. An end that handed its conversation over names the turn that started
-- (turn_id, status 'running', epoch, next_position).
--
-- Each turn is looked up by its own statement, by id and conversation (a join would leave
-- the planner free to scan every running turn; see 0002_stable_plans.sql); the messages
-- of every step of the batch are inserted by one statement.
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

    -- Claims, in the order they were sent.
    i := 0;
    FOREACH w IN ARRAY p_writes LOOP
        i := i + 1;
        CONTINUE WHEN w.kind <> 'claim';
        v_claim := turnstore_claim(w.lock_key, w.conversation_id, w.turn_id,
            w.idempotency_key, w.content_hash, w.content, w.owner, w.lease_seconds,
            w.window_seconds, w.fail_when_busy, w.first, w.retry);
        ord := i;
        outcome := v_claim.decision;
        turn_id := v_claim.turn_id;
        status := v_claim.status;
        epoch := v_claim.epoch;
        next_position := v_claim.next_position;
        RETURN NEXT;
    END LOOP;
END $$;
