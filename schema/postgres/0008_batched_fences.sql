-- turnstore schema, version 8, PostgreSQL: a batch's fences and ends take one statement.
--
-- turnstore_apply checked the fencing token of each step of a batch with an UPDATE of its
-- own, and ended each turn with another. A statement's set-up costs more than the row it
-- changes: PostgreSQL reads the CHECK constraints of turnstore_turns back from their
-- stored form and prepares them at every execution (see 0006_cheaper_claims.sql). With
-- one connection updating eight running turns in a loop, one transaction a round
-- (synchronous_commit off), eight single-row UPDATEs cost 52 µs a row and one UPDATE of
-- the eight rows 19 µs a row.
--
-- A batch of more than one write now checks the fences of all its steps (and ends' last
-- steps) with one UPDATE ... FROM unnest(p_writes), and ends the turns of all its ends
-- with another; a lone write, the common case when the database is idle, keeps its own
-- single-row statements. Each of the two names the batch's turn ids and conversations
-- (= ANY): joined to unnest(p_writes) alone, the planner was free to read every running
-- turn of the table and hash them, and did on a table never analyzed
-- (tests/test_plans.py). The rules and the answers are unchanged: each row is matched by
-- its turn id and conversation, and a
-- write that does not pass is refused with its turn's status, as before. One write per
-- turn is in flight at a time (the store's client sends a turn's writes one after the
-- other), so no two writes of a batch update the same turn. A caller that sent two (steps
-- k and k + 1 of one turn) would see only the first applied and the second refused, as if
-- it had arrived first, where one by one both would pass (tests/test_apply.py). SQLite
-- runs no such statement (see sqlite/0008_batched_fences.sql).

CREATE OR REPLACE FUNCTION turnstore_apply(p_writes turnstore_write[])
RETURNS TABLE (ord bigint, outcome text, turn_id text, status text, epoch bigint,
               next_position bigint)
LANGUAGE plpgsql AS $$
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
               SET steps = s.step,
                   lease_expires_at = now() + make_interval(secs => s.lease_seconds)
              FROM unnest(p_writes) WITH ORDINALITY AS s
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
