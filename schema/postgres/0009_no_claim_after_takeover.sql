-- turnstore schema, version 9, PostgreSQL: a poll or a retry never claims a turn that has
-- already run.
--
-- A submit waiting in line polls turnstore_claim (p_first false); a claim whose reply was
-- lost is sent again (p_retry). If the waiting turn was handed the conversation while its
-- submitter was away (its process paused past the lease), then taken over by another turn
-- (status 'expired') or ended, version 6 found it neither running nor queued and went on
-- to claim it again: a new epoch, its user message written a second time after another
-- turn's, and an answer 'claimed' for a turn whose first write was then refused
-- (tests/test_taken_over.py). Such a poll or retry is now answered 'taken_over', with the
-- turn's status, and writes nothing; the store raises TurnTakenOver.
--
-- The rule is a check in front of version 6's function, which keeps its name with a
-- suffix and is otherwise unchanged: first claims (p_first, not p_retry) do not run it.

ALTER FUNCTION turnstore_claim(bigint, text, text, text, text, text, text, double precision,
                               double precision, boolean, boolean, boolean, boolean)
    RENAME TO turnstore_claim_v6;

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
    p_write_message   boolean DEFAULT true
) RETURNS turnstore_claim_answer LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
BEGIN
    IF p_retry OR NOT p_first THEN
        PERFORM pg_advisory_xact_lock(p_lock_key);
        SELECT t.status INTO v_status FROM turnstore_turns t
         WHERE t.id = p_turn_id AND t.conversation_id = p_conversation_id;
        IF v_status IN ('expired', 'finished', 'failed', 'interrupted') THEN
            RETURN ('taken_over', p_turn_id, v_status, 0, NULL, false)::turnstore_claim_answer;
        END IF;
    END IF;
    RETURN turnstore_claim_v6(p_lock_key, p_conversation_id, p_turn_id, p_idempotency_key,
        p_content_hash, p_content, p_owner, p_lease_seconds, p_window_seconds,
        p_fail_when_busy, p_first, p_retry, p_write_message);
END $$;
