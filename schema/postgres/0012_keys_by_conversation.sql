-- turnstore schema, version 12, PostgreSQL: every key names its conversation, so that the
-- tables can be sharded by conversation (Citus: docs/scaling.md), and every statement
-- that changes a conversation names it. The first of four migrations (12 to 15):
--
-- * 12 (this one, expand): turnstore_staged_steps gets a nullable conversation_id, filled
--   from its turn for the rows there are and, by a trigger, for a row that release 11's
--   code inserts without it; a check that it is set and a foreign key to the turn's
--   (id, conversation_id), both NOT VALID; the functions below.
-- * 13 (no-transaction): the new keys built as unique indexes, CONCURRENTLY.
-- * 14: the check and the foreign key validated.
-- * 15 (contract, code from 12): the keys swapped (staged steps keyed (conversation_id,
--   turn_id, step), usage (conversation_id, turn_id, seq)), turnstore_turns' primary key on
--   id alone dropped (its key is the pair (id, conversation_id), unique since version 1,
--   which the foreign keys reference, and its replica identity), the old keys and the
--   trigger dropped. Release 11's code upserts staged steps ON CONFLICT (turn_id, step):
--   apply 15 only once no release-11 process runs (docs/operations.md).
--
-- The code of this release runs against 14 and 15: every statement it runs names the
-- conversation, and its upsert's ON CONFLICT (conversation_id, turn_id, step) finds the
-- unique index of 13 or the primary key of 15.
--
-- Functions: turnstore_apply's batched fence computes each write's new lease in a
-- subquery (an UPDATE that calls now() with a column reference cannot be sharded), and its
-- end of a turn drops the turn's staged steps by conversation and turn; turnstore_claim_v6's
-- takeover names the conversation in its join and delete of staged steps and writes its
-- CASE with a search condition (CASE t.status WHEN ... is rewritten by Citus into a
-- comparison of text with boolean when the statement is prepared). Their signatures and
-- rules are unchanged (release 11's code calls them too: the trigger has set every staged
-- step's conversation). Two new functions name their conversation first, so that a
-- sharded database can run them on the node that holds it (create_distributed_function on
-- p_conversation_id): turnstore_lock, the conversation's lock for a write transaction, and
-- turnstore_apply_conversation, turnstore_apply for writes of one conversation.
--
-- Locks: ACCESS EXCLUSIVE on turnstore_staged_steps for the new column (catalog only: a
-- nullable column without a default) and the NOT VALID constraints; SHARE ROW EXCLUSIVE on
-- turnstore_staged_steps (the trigger) and on turnstore_turns (the foreign key, not
-- checked); then the backfill, an UPDATE of every staged step (the checkpoints of running
-- turns: a few rows, one per running turn at most), whose row locks are held to the
-- migration's commit. On a database with many staged steps the backfill could run in
-- batches (UPDATE ... WHERE ctid IN (SELECT ... WHERE conversation_id IS NULL LIMIT n)
-- until none is left, each batch its own transaction): the trigger already fills new
-- rows, and 14's validation finds any row left. turnstore_turns and history are not
-- written.
--
-- turnstore: expand

ALTER TABLE turnstore_staged_steps
    ADD COLUMN conversation_id text,
    ADD CONSTRAINT turnstore_staged_steps_conversation_set
        CHECK (conversation_id IS NOT NULL) NOT VALID,
    ADD CONSTRAINT turnstore_staged_steps_turn_fkey FOREIGN KEY (turn_id, conversation_id)
        REFERENCES turnstore_turns (id, conversation_id) NOT VALID;

-- Release 11's code inserts a staged step without its conversation: its turn's.
CREATE FUNCTION turnstore_staged_step_conversation() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.conversation_id IS NULL THEN
        SELECT t.conversation_id INTO NEW.conversation_id
          FROM turnstore_turns t WHERE t.id = NEW.turn_id;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER turnstore_staged_steps_conversation
    BEFORE INSERT ON turnstore_staged_steps
    FOR EACH ROW EXECUTE FUNCTION turnstore_staged_step_conversation();

UPDATE turnstore_staged_steps s SET conversation_id = t.conversation_id
  FROM turnstore_turns t WHERE t.id = s.turn_id AND s.conversation_id IS NULL;

CREATE OR REPLACE FUNCTION turnstore_apply(p_writes turnstore_write[]) RETURNS TABLE(ord bigint, outcome text, turn_id text, status text, epoch bigint, next_position bigint)
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_fenced bigint[] := '{}';  -- steps (and ends' last steps) that passed their fence
    v_ended  bigint[] := '{}';  -- ends that ended their turn
    -- the turns of the batch's steps and ends, and their conversations
    v_turns_written         text[] := '{}';
    v_conversations_written text[] := '{}';
    v_steps  integer := 0;  -- writes with a step (steps, and ends with a last step)
    v_ends   integer := 0;
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
        IF w.kind <> 'claim' AND cardinality(p_writes) > 1 THEN  -- for the batch statements
            v_turns_written := v_turns_written || w.turn_id;
            v_conversations_written := v_conversations_written || w.conversation_id;
            v_steps := v_steps + (w.content IS NOT NULL)::integer;
            v_ends := v_ends + (w.kind = 'end')::integer;
        END IF;
    END LOOP;
    IF cardinality(p_writes) = 1 THEN
        PERFORM pg_advisory_xact_lock(p_writes[1].lock_key);
    ELSE
        PERFORM pg_advisory_xact_lock(k.lock_key)
           FROM (SELECT DISTINCT u.lock_key FROM unnest(p_writes) AS u ORDER BY 1) AS k;
    END IF;

    -- Steps, and the last steps of ends: check each turn's fencing token and extend its
    -- lease (one UPDATE for a batch: see the top of this file), then insert the rows of
    -- every step that passed.
    IF cardinality(p_writes) = 1 THEN
        w := p_writes[1];
        IF w.kind <> 'claim' AND w.content IS NOT NULL THEN
            UPDATE turnstore_turns t
               SET steps = w.step,
                   lease_expires_at = now() + make_interval(secs => w.lease_seconds)
             WHERE t.id = w.turn_id AND t.conversation_id = w.conversation_id
               AND t.epoch = w.epoch AND t.status = 'running' AND t.steps = w.step - 1;
            IF FOUND THEN
                v_fenced := '{1}';
            END IF;
        END IF;
    ELSIF v_steps > 0 THEN
        WITH fenced AS (
            UPDATE turnstore_turns t
               SET steps = s.step, lease_expires_at = s.lease_expires_at
              FROM (SELECT u.*, now() + make_interval(secs => u.lease_seconds) AS lease_expires_at
                      FROM unnest(p_writes) WITH ORDINALITY AS u) AS s
             WHERE s.kind <> 'claim' AND s.content IS NOT NULL
               AND t.id = ANY (v_turns_written)
               AND t.conversation_id = ANY (v_conversations_written)
               AND t.id = s.turn_id AND t.conversation_id = s.conversation_id
               AND t.epoch = s.epoch AND t.status = 'running' AND t.steps = s.step - 1
            RETURNING s.ordinality
        )
        SELECT coalesce(array_agg(f.ordinality), '{}') INTO v_fenced FROM fenced AS f;
    END IF;
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

    -- Ends whose last step (if any) was written end now (one UPDATE for a batch).
    IF cardinality(p_writes) = 1 THEN
        w := p_writes[1];
        IF w.kind = 'end' AND (w.content IS NULL OR 1 = ANY (v_fenced)) THEN
            UPDATE turnstore_turns t SET status = w.status, error = w.error, ended_at = now()
             WHERE t.id = w.turn_id AND t.conversation_id = w.conversation_id
               AND t.epoch = w.epoch AND t.status = 'running';
            IF FOUND THEN
                v_ended := '{1}';
            END IF;
        END IF;
    ELSIF v_ends > 0 THEN
        WITH ended AS (
            UPDATE turnstore_turns t SET status = s.status, error = s.error, ended_at = now()
              FROM unnest(p_writes) WITH ORDINALITY AS s
             WHERE s.kind = 'end' AND (s.content IS NULL OR s.ordinality = ANY (v_fenced))
               AND t.id = ANY (v_turns_written)
               AND t.conversation_id = ANY (v_conversations_written)
               AND t.id = s.turn_id AND t.conversation_id = s.conversation_id
               AND t.epoch = s.epoch AND t.status = 'running'
            RETURNING s.ordinality
        )
        SELECT coalesce(array_agg(e.ordinality), '{}') INTO v_ended FROM ended AS e;
    END IF;

    -- Steps and ends: answer each; an end that ended its turn hands the conversation over.
    i := 0;
    FOREACH w IN ARRAY p_writes LOOP
        i := i + 1;
        CONTINUE WHEN w.kind = 'claim';
        ord := i;
        turn_id := NULL; status := NULL; epoch := NULL; next_position := NULL;
        outcome := NULL;
        IF w.kind = 'end' THEN
            IF i = ANY (v_ended) THEN
                DELETE FROM turnstore_staged_steps s
                 WHERE s.conversation_id = w.conversation_id AND s.turn_id = w.turn_id;
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

CREATE OR REPLACE FUNCTION turnstore_claim_v6(p_lock_key bigint, p_conversation_id text, p_turn_id text, p_idempotency_key text, p_content_hash text, p_content text, p_owner text, p_lease_seconds double precision, p_window_seconds double precision, p_fail_when_busy boolean, p_first boolean, p_retry boolean, p_write_message boolean DEFAULT true) RETURNS turnstore_claim_answer
    LANGUAGE plpgsql
    AS $$
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
                     JOIN turnstore_staged_steps s
                       ON s.conversation_id = t.conversation_id AND s.turn_id = t.id
                      AND s.step = t.steps + 1
                    WHERE t.conversation_id = p_conversation_id AND t.status = 'running'
                      AND t.lease_expires_at < now()) THEN
            RETURN ('recover', v_turn, NULL, 0, NULL, false)::turnstore_claim_answer;
        END IF;
        WITH expired AS (
            UPDATE turnstore_turns t
               SET status = CASE WHEN t.status = 'running' THEN 'expired' ELSE 'refused' END,
                   ended_at = now(), pending_content = NULL,
                   error = coalesce(t.error, 'lease expired: its owner stopped renewing it')
             WHERE t.conversation_id = p_conversation_id AND t.status IN ('queued', 'running')
               AND t.lease_expires_at < now()
            RETURNING t.id
        )
        DELETE FROM turnstore_staged_steps s USING expired e
         WHERE s.conversation_id = p_conversation_id AND s.turn_id = e.id;
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

CREATE FUNCTION turnstore_lock(p_conversation_id text, p_lock_key bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_key);
END $$;

CREATE FUNCTION turnstore_apply_conversation(p_conversation_id text,
                                             p_writes turnstore_write[])
RETURNS TABLE (ord bigint, outcome text, turn_id text, status text, epoch bigint,
               next_position bigint)
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM unnest(p_writes) AS u
                WHERE u.conversation_id IS DISTINCT FROM p_conversation_id) THEN
        RAISE EXCEPTION 'turnstore_apply_conversation: every write must be on conversation %',
            p_conversation_id USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY SELECT * FROM turnstore_apply(p_writes);
END $$;
