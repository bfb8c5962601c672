-- turnstore schema, version 1, PostgreSQL.
--
-- The invariants every client must respect are enforced here, not in the library:
--   * a step is an assistant message at position a announcing K tool calls, followed
--     directly by K tool rows at a+1 .. a+K; each tool row holds one call AND its result,
--     so a call without a result, or a result without its call, cannot be stored;
--   * positions are dense per conversation (0, 1, 2, ...);
--   * a tool call id appears once per conversation;
--   * at most one turn per conversation is running;
--   * messages are append-only.
-- The pairing and density checks are DEFERRABLE INITIALLY DEFERRED: they are checked at
-- COMMIT, so a transaction may insert a step's rows in any order.

CREATE TABLE turnstore_conversations (
    id          text        PRIMARY KEY CHECK (id <> '' AND length(id) <= 256),
    epoch       bigint      NOT NULL DEFAULT 0,   -- fencing token: bumped at every claim
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE turnstore_turns (
    id               text        PRIMARY KEY,
    conversation_id  text        NOT NULL REFERENCES turnstore_conversations (id),
    idempotency_key  text        CHECK (idempotency_key <> ''),
    content_hash     text        NOT NULL,        -- sha256 of the user message (keyless dedup)
    status           text        NOT NULL CHECK (status IN
                         ('queued', 'running', 'finished', 'failed', 'interrupted',
                          'expired', 'refused')),
    epoch            bigint      NOT NULL DEFAULT 0,
    lease_owner      text        NOT NULL,
    lease_expires_at timestamptz NOT NULL,
    steps            integer     NOT NULL DEFAULT 0,
    error            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    ended_at         timestamptz,
    UNIQUE (id, conversation_id),
    UNIQUE (conversation_id, idempotency_key)
);

-- One turn at a time per conversation, whatever client writes.
CREATE UNIQUE INDEX turnstore_turns_one_running
    ON turnstore_turns (conversation_id) WHERE status = 'running';
CREATE INDEX turnstore_turns_waiting
    ON turnstore_turns (conversation_id, created_at) WHERE status IN ('queued', 'running');
CREATE INDEX turnstore_turns_by_content
    ON turnstore_turns (conversation_id, content_hash);

CREATE TABLE turnstore_messages (
    conversation_id  text        NOT NULL,
    position         bigint      NOT NULL CHECK (position >= 0),
    role             text        NOT NULL CHECK (role IN ('user', 'assistant', 'tool')),
    turn_id          text        NOT NULL,
    step             integer     NOT NULL CHECK (step >= 0),
    -- The position of the message that opens this row's step (itself for user and
    -- assistant rows) and the number of tool calls that step announced.
    step_position    bigint      NOT NULL,
    tool_call_count  integer     NOT NULL DEFAULT 0 CHECK (tool_call_count >= 0),
    content          jsonb       NOT NULL CHECK (jsonb_typeof(content) = 'array'),
    -- Tool rows: the call (id, name, arguments, provider data) and its result (content).
    tool_call_id     text        CHECK (tool_call_id <> ''),
    tool_name        text        CHECK (tool_name <> ''),
    tool_arguments   jsonb       CHECK (jsonb_typeof(tool_arguments) = 'object'),
    tool_call_data   jsonb,
    is_error         boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),

    -- The turn a user message opens; a turn's other messages follow it (see the checker).
    user_turn_id     text GENERATED ALWAYS AS (CASE WHEN role = 'user' THEN turn_id END) STORED,
    prev_position    bigint GENERATED ALWAYS AS (NULLIF(position, 0) - 1) STORED,
    chain_position   bigint GENERATED ALWAYS AS
                         (CASE WHEN role = 'tool' THEN position - 1 END) STORED,
    last_call_position bigint GENERATED ALWAYS AS
                         (CASE WHEN role = 'assistant' AND tool_call_count > 0
                               THEN position + tool_call_count END) STORED,

    PRIMARY KEY (conversation_id, position),
    UNIQUE (conversation_id, position, step_position, tool_call_count, step),
    UNIQUE (conversation_id, tool_call_id),
    -- Checked once per turn, on its user message (a check on every row costs a row lock
    -- of the turn per message).
    FOREIGN KEY (user_turn_id, conversation_id) REFERENCES turnstore_turns (id, conversation_id),

    CONSTRAINT turnstore_message_shape CHECK (CASE role
        WHEN 'user' THEN step = 0 AND step_position = position AND tool_call_count = 0
             AND tool_call_id IS NULL AND tool_name IS NULL AND tool_arguments IS NULL
             AND tool_call_data IS NULL AND NOT is_error
        WHEN 'assistant' THEN step >= 1 AND step_position = position
             AND tool_call_id IS NULL AND tool_name IS NULL AND tool_arguments IS NULL
             AND tool_call_data IS NULL AND NOT is_error
        ELSE step >= 1 AND step_position < position
             AND position <= step_position + tool_call_count
             AND tool_call_id IS NOT NULL AND tool_name IS NOT NULL
             AND tool_arguments IS NOT NULL
        END),
    -- Dense positions: every message but the first has its predecessor.
    CONSTRAINT turnstore_dense_positions
        FOREIGN KEY (conversation_id, prev_position)
        REFERENCES turnstore_messages (conversation_id, position)
        DEFERRABLE INITIALLY DEFERRED,
    -- A tool row directly follows a row of its own step (the assistant message or an
    -- earlier tool row): no result can stand apart from the call's assistant message.
    CONSTRAINT turnstore_result_follows_its_step
        FOREIGN KEY (conversation_id, chain_position, step_position, tool_call_count, step)
        REFERENCES turnstore_messages (conversation_id, position, step_position,
                                       tool_call_count, step)
        DEFERRABLE INITIALLY DEFERRED,
    -- An assistant message announcing K calls has its K-th tool row: no call is left
    -- without a result.
    CONSTRAINT turnstore_every_call_answered
        FOREIGN KEY (conversation_id, last_call_position, position, tool_call_count, step)
        REFERENCES turnstore_messages (conversation_id, position, step_position,
                                       tool_call_count, step)
        DEFERRABLE INITIALLY DEFERRED
);

-- Append-only: no client may rewrite or delete committed history.
CREATE FUNCTION turnstore_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'turnstore: % on % is refused: committed history is append-only',
        TG_OP, TG_TABLE_NAME USING ERRCODE = 'integrity_constraint_violation';
END $$;

CREATE TRIGGER turnstore_messages_append_only
    BEFORE UPDATE OR DELETE ON turnstore_messages
    FOR EACH ROW EXECUTE FUNCTION turnstore_refuse_change();
CREATE TRIGGER turnstore_messages_no_truncate
    BEFORE TRUNCATE ON turnstore_messages
    FOR EACH STATEMENT EXECUTE FUNCTION turnstore_refuse_change();

-- Work a turn has checkpointed inside a step that is not committed yet: the assistant
-- message, its calls and the results that came back. When the turn's process dies and
-- its lease is taken over, the new turn commits this work as a step, closing every
-- unanswered call with an "interrupted" error result, so completed tool results are
-- never lost. One row per (turn, step), replaced at every checkpoint.
CREATE TABLE turnstore_staged_steps (
    turn_id     text        NOT NULL REFERENCES turnstore_turns (id),
    step        integer     NOT NULL CHECK (step >= 1),
    payload     jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (turn_id, step)
);

-- The hot path: commit one step (the assistant message and one tool row per call) in a
-- single round trip. Takes the conversation's advisory lock, checks the turn's fencing
-- token (running, same epoch, previous step committed), extends its lease and inserts.
-- Returns NULL when the step was committed, else '<turn status>:<committed steps>' and
-- writes nothing. The deferred pairing constraints are checked when the call commits.
CREATE FUNCTION turnstore_commit_step(
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
     WHERE id = p_turn_id AND epoch = p_epoch AND status = 'running'
       AND steps = p_step - 1;
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

-- Beginning a turn in one round trip: the decision store/claim.py takes (read that module
-- for the rules), for the common cases. Returns one row (decision, turn_id, status, epoch,
-- next_position) with decision one of:
--   'claimed'     the turn runs: its user message is written, next_position follows it;
--   'duplicate'   an earlier submit of the same key (or same keyless message) is turn_id;
--   'queued'      the conversation is busy: the turn waits in the queue;
--   'busy'        the conversation is busy and the caller asked not to wait (nothing written);
--   'key_reused'  the key was used for a different message (nothing written);
--   'recover'     a dead turn left checkpointed work to commit: nothing was changed, the
--                 caller takes the general path, which recovers it.
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
        SELECT t.status, t.epoch INTO v_row FROM turnstore_turns t WHERE t.id = p_turn_id;
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
             WHERE t.id = v_turn AND t.status = 'queued';
            RETURN QUERY SELECT CASE WHEN FOUND THEN 'queued' ELSE 'busy' END, v_turn,
                                'queued', 0::bigint, NULL::bigint;
            RETURN;
        END IF;
        IF v_requeue THEN
            UPDATE turnstore_turns t
               SET status = 'queued', ended_at = NULL, error = NULL, lease_owner = p_owner,
                   lease_expires_at = now() + v_lease, created_at = clock_timestamp()
             WHERE t.id = v_turn AND t.status = 'refused';
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
         WHERE t.id = v_turn AND t.status IN ('queued', 'refused');
    END IF;
    SELECT coalesce(max(m.position), -1) + 1 INTO v_pos FROM turnstore_messages m
     WHERE m.conversation_id = p_conversation_id;
    INSERT INTO turnstore_messages (conversation_id, position, role, turn_id, step,
                                    step_position, tool_call_count, content)
    VALUES (p_conversation_id, v_pos, 'user', v_turn, 0, v_pos, 0, p_content::jsonb);
    RETURN QUERY SELECT 'claimed', v_turn, 'running', v_epoch, v_pos + 1;
END $$;

-- Ending a turn in one round trip, optionally committing a last step first (the
-- p_step... arguments of turnstore_commit_step; p_content NULL for none). Returns NULL when
-- the turn ended, else '<turn status>:<committed steps>' having written nothing.
CREATE FUNCTION turnstore_end_turn(
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
     WHERE id = p_turn_id AND epoch = p_epoch AND status = 'running';
    IF NOT FOUND THEN
        SELECT status, steps INTO v_status, v_steps FROM turnstore_turns WHERE id = p_turn_id;
        RETURN coalesce(v_status, 'missing') || ':' || coalesce(v_steps, -1);
    END IF;
    DELETE FROM turnstore_staged_steps WHERE turn_id = p_turn_id;
    RETURN NULL;
END $$;
