-- Every query turnstore runs on PostgreSQL, by name. Parameters are :named.
-- Write queries run inside a transaction that holds the conversation's advisory lock
-- (lock_conversation), so they see and change one conversation at a time.
-- A lookup of a turn by id also names its conversation: see 0002_stable_plans.sql. On a
-- database sharded by conversation (Citus: docs/scaling.md) a statement that names its
-- conversation runs on the one node that holds it; the few reads by turn id alone
-- (turn_info, resume_turn, usage_of_turn: a caller that knows only the turn id) ask every
-- shard.

-- name: lock_conversation
SELECT pg_advisory_xact_lock(:lock_key);

-- name: lock_conversation_sharded
-- The same lock taken on the node that holds the conversation (turnstore_lock is
-- distributed on its conversation, with force_delegation: see store/citus.py).
SELECT turnstore_lock(:conversation_id, :lock_key);

-- name: turn_by_key
SELECT id, status, epoch, content_hash FROM turnstore_turns
 WHERE conversation_id = :conversation_id AND idempotency_key = :idempotency_key;

-- name: recent_turn_with_content
SELECT id, status, epoch, content_hash FROM turnstore_turns
 WHERE conversation_id = :conversation_id AND content_hash = :content_hash
   AND idempotency_key IS NULL
   AND (status IN ('queued', 'running')
        OR (status <> 'refused' AND ended_at > now() - make_interval(secs => :window)))
 ORDER BY created_at DESC LIMIT 1;

-- name: expire_stale_turns
UPDATE turnstore_turns
   SET status = CASE WHEN status = 'running' THEN 'expired' ELSE 'refused' END,
       pending_content = NULL,
       ended_at = now(),
       error = coalesce(error, 'lease expired: its owner stopped renewing it')
 WHERE conversation_id = :conversation_id AND status IN ('queued', 'running')
   AND lease_expires_at < now()
RETURNING id, status, epoch, steps;

-- name: queue_head
-- The head of the line (the running turn, else the oldest waiting one), and whether any
-- live turn's lease has expired (then it is taken over first).
SELECT t.id, t.status,
       (SELECT bool_or(x.lease_expires_at < now()) FROM turnstore_turns x
         WHERE x.conversation_id = :conversation_id
           AND x.status IN ('queued', 'running')) AS stale
  FROM turnstore_turns t
 WHERE t.conversation_id = :conversation_id AND t.status IN ('queued', 'running')
 ORDER BY t.status = 'running' DESC, t.created_at, t.id LIMIT 1;

-- name: bump_epoch
UPDATE turnstore_conversations SET epoch = epoch + 1 WHERE id = :conversation_id
RETURNING epoch;

-- name: first_epoch
-- A conversation's first turn creates it.
INSERT INTO turnstore_conversations (id, epoch) VALUES (:conversation_id, 1) RETURNING epoch;

-- name: insert_turn
INSERT INTO turnstore_turns
    (id, conversation_id, idempotency_key, content_hash, status, epoch, lease_owner,
     lease_expires_at, created_at, started_at, pending_content)
VALUES (:turn_id, :conversation_id, :idempotency_key, :content_hash, :status, :epoch,
        :owner, now() + make_interval(secs => :lease_seconds), clock_timestamp(),
        CASE WHEN :status = 'running' THEN clock_timestamp() END,
        CAST(CAST(:pending_content AS text) AS jsonb));

-- name: promote_turn
UPDATE turnstore_turns
   SET status = 'running', epoch = :epoch, pending_content = NULL, ended_at = NULL,
       error = NULL,
       started_at = now(), lease_owner = :owner,
       lease_expires_at = now() + make_interval(secs => :lease_seconds)
 WHERE id = :turn_id AND conversation_id = :conversation_id AND status IN ('queued', 'refused');

-- name: requeue_turn
UPDATE turnstore_turns
   SET status = 'queued', ended_at = NULL, error = NULL, lease_owner = :owner,
       pending_content = CAST(CAST(:pending_content AS text) AS jsonb),
       lease_expires_at = now() + make_interval(secs => :lease_seconds),
       created_at = clock_timestamp()
 WHERE id = :turn_id AND conversation_id = :conversation_id AND status = 'refused';

-- name: refresh_queued_turn
UPDATE turnstore_turns
   SET lease_expires_at = now() + make_interval(secs => :lease_seconds)
 WHERE id = :turn_id AND conversation_id = :conversation_id AND status = 'queued';

-- name: refuse_queued_turn
UPDATE turnstore_turns
   SET status = 'refused', pending_content = NULL, ended_at = now(), error = :error
 WHERE id = :turn_id AND conversation_id = :conversation_id AND status = 'queued';

-- name: next_in_line
-- The oldest waiting turn whose submitter is still there: a turn that ends hands the
-- conversation over to it.
SELECT id, pending_content::text AS pending_content, lease_owner FROM turnstore_turns
 WHERE conversation_id = :conversation_id AND status = 'queued'
   AND lease_expires_at >= now() AND pending_content IS NOT NULL
 ORDER BY created_at, id LIMIT 1;

-- name: next_position
-- ORDER BY ... LIMIT 1 rather than max(): PostgreSQL may plan max() as an aggregate over
-- the whole conversation (see postgres/0006_cheaper_claims.sql).
SELECT coalesce((SELECT position FROM turnstore_messages
                  WHERE conversation_id = :conversation_id
                  ORDER BY position DESC LIMIT 1), -1) + 1;

-- name: insert_message
INSERT INTO turnstore_messages
    (conversation_id, position, role, turn_id, step, step_position, tool_call_count,
     content, tool_call_id, tool_name, tool_arguments, tool_call_data, is_error)
VALUES (:conversation_id, :position, :role, :turn_id, :step, :step_position,
        :tool_call_count, CAST(CAST(:content AS text) AS jsonb), :tool_call_id, :tool_name,
        CAST(CAST(:tool_arguments AS text) AS jsonb),
        CAST(CAST(:tool_call_data AS text) AS jsonb), :is_error);

-- name: fence_step
UPDATE turnstore_turns
   SET steps = :step, lease_expires_at = now() + make_interval(secs => :lease_seconds)
 WHERE id = :turn_id AND conversation_id = :conversation_id AND epoch = :epoch
   AND status = 'running' AND steps = :step - 1;

-- name: heartbeat
UPDATE turnstore_turns
   SET lease_expires_at = now() + make_interval(secs => :lease_seconds)
 WHERE id = :turn_id AND conversation_id = :conversation_id AND epoch = :epoch
   AND status = 'running';

-- name: end_turn
UPDATE turnstore_turns SET status = :status, error = :error, ended_at = now()
 WHERE id = :turn_id AND conversation_id = :conversation_id AND epoch = :epoch
   AND status = 'running';

-- name: turn_state
SELECT status, steps, epoch FROM turnstore_turns
 WHERE id = :turn_id AND conversation_id = :conversation_id;

-- name: step_rows
-- The rows at the positions a step was written to (its assistant message, then one tool
-- row per call): a write retried after an unknown outcome compares them with itself, to
-- know whether it landed (store/turn.py).
SELECT position, role, turn_id, step, content::text AS content, tool_arguments::text AS tool_arguments,
       tool_call_data::text AS tool_call_data,
       tool_call_id, tool_name, is_error
  FROM turnstore_messages
 WHERE conversation_id = :conversation_id AND position >= :first AND position <= :last
 ORDER BY position;

-- name: call_id_used
-- Whether a tool call id is already in the conversation (to name it in the error).
SELECT position FROM turnstore_messages
 WHERE conversation_id = :conversation_id AND tool_call_id = :call_id;

-- name: turn_info
SELECT id, conversation_id, idempotency_key, status, steps, error,
       created_at, started_at, ended_at
  FROM turnstore_turns WHERE id = :turn_id;

-- name: stage_step
-- updated_at: the new row's default (Citus runs no function but an IMMUTABLE one in DO
-- UPDATE SET).
INSERT INTO turnstore_staged_steps (conversation_id, turn_id, step, payload)
VALUES (:conversation_id, :turn_id, :step, CAST(CAST(:payload AS text) AS jsonb))
ON CONFLICT (conversation_id, turn_id, step)
DO UPDATE SET payload = excluded.payload, updated_at = excluded.updated_at;

-- name: staged_step
SELECT payload FROM turnstore_staged_steps
 WHERE conversation_id = :conversation_id AND turn_id = :turn_id AND step = :step;

-- name: drop_staged_steps
DELETE FROM turnstore_staged_steps
 WHERE conversation_id = :conversation_id AND turn_id = :turn_id;

-- name: window_start
-- Where a window of the last :last messages starts: the user message that opens the turn
-- of the :last-th last message (a turn's messages follow its user message), so that a
-- window is a conversation a provider accepts, never a tail that starts inside a turn.
SELECT position FROM turnstore_messages
 WHERE conversation_id = :conversation_id AND role = 'user'
   AND position <= (SELECT position FROM turnstore_messages
                     WHERE conversation_id = :conversation_id
                     ORDER BY position DESC LIMIT 1) - :last + 1
 ORDER BY position DESC LIMIT 1;

-- name: history
SELECT position, role, turn_id, step, tool_call_count, content, tool_call_id, tool_name,
       tool_arguments, tool_call_data, is_error, created_at
  FROM turnstore_messages
 WHERE conversation_id = :conversation_id AND position >= :from_position
 ORDER BY position;

-- name: replay
-- What replay needs of the last :last messages (0: all), from the start of the turn the
-- window would cut (see window_start), in one statement; JSON as text (decoded by the
-- caller, all rows at once).
SELECT position, role, tool_call_count, content::text, tool_call_id, tool_name,
       tool_arguments::text, tool_call_data::text, is_error
  FROM turnstore_messages
 WHERE conversation_id = :conversation_id
   AND position >= coalesce(
         (SELECT u.position FROM turnstore_messages u
           WHERE u.conversation_id = :conversation_id AND u.role = 'user' AND :last > 0
             AND u.position <= (SELECT position FROM turnstore_messages
                                 WHERE conversation_id = :conversation_id
                                 ORDER BY position DESC LIMIT 1) - :last + 1
           ORDER BY u.position DESC LIMIT 1),
         0)
 ORDER BY position;

-- name: set_turn_steps
UPDATE turnstore_turns SET steps = :step
 WHERE id = :turn_id AND conversation_id = :conversation_id;

-- The invariant checker reads the tables directly, independently of the write path.

-- name: check_messages
SELECT conversation_id, position, role, turn_id, step, step_position, tool_call_count,
       tool_call_id
  FROM turnstore_messages
 ORDER BY conversation_id, position;

-- name: check_turns
SELECT id, conversation_id, idempotency_key, status, steps,
       pending_content IS NOT NULL AS keeps_message
  FROM turnstore_turns
 ORDER BY conversation_id, created_at, id;

-- name: turns_by_status
SELECT status, count(*) AS n FROM turnstore_turns GROUP BY status;

-- name: history_window_driver
-- The history query above in one statement, for asyncpg ($1 conversation, $2 last N or 0
-- for all), JSON as text: decoded by the caller.
SELECT position, role, turn_id, step, tool_call_count, content::text, tool_call_id,
       tool_name, tool_arguments::text, tool_call_data::text, is_error, created_at
  FROM turnstore_messages
 WHERE conversation_id = $1
   AND position >= coalesce(
         (SELECT u.position FROM turnstore_messages u
           WHERE u.conversation_id = $1 AND u.role = 'user' AND $2 > 0
             AND u.position <= (SELECT position FROM turnstore_messages
                                 WHERE conversation_id = $1
                                 ORDER BY position DESC LIMIT 1) - $2 + 1
           ORDER BY u.position DESC LIMIT 1),
         0)
 ORDER BY position;

-- Sessions of the OpenAI Agents SDK (store/integrations/agents_log.py) and their marks
-- (0010_session_marks_and_erasure.sql).

-- name: agents_last_row
-- The conversation's last message and its turn: a session's write goes on in that turn if
-- the session opened it.
SELECT m.position, m.turn_id, t.status, t.steps, t.epoch
  FROM turnstore_messages m
  JOIN turnstore_turns t ON t.id = m.turn_id AND t.conversation_id = m.conversation_id
 WHERE m.conversation_id = :conversation_id
 ORDER BY position DESC LIMIT 1;

-- name: agents_reopen_turn
-- A session's turn that ended after its last write, running again for the session's next
-- write to it (the conversation's last turn: nothing has run since).
UPDATE turnstore_turns
   SET status = 'running', epoch = :epoch, ended_at = NULL, error = NULL,
       lease_owner = :owner,
       lease_expires_at = now() + make_interval(secs => :lease_seconds)
 WHERE id = :turn_id AND conversation_id = :conversation_id AND status = 'finished';

-- name: agents_staged
-- The step the conversation's running turn staged (a session's function call waiting for
-- its output), if any.
SELECT t.id, t.steps, s.payload::text AS payload
  FROM turnstore_turns t
  JOIN turnstore_staged_steps s
    ON s.conversation_id = t.conversation_id AND s.turn_id = t.id AND s.step = t.steps + 1
 WHERE t.conversation_id = :conversation_id AND t.status = 'running';

-- name: agents_visible_from
-- Where a session's visible history starts: its last clear (clears only move forward).
SELECT position FROM turnstore_session_marks
 WHERE conversation_id = :conversation_id AND kind = 'clear'
 ORDER BY position DESC LIMIT 1;

-- name: agents_pops
SELECT position, slot FROM turnstore_session_marks
 WHERE conversation_id = :conversation_id AND kind = 'pop' AND position >= :from_position;

-- name: agents_insert_mark
INSERT INTO turnstore_session_marks (conversation_id, seq, kind, position, slot)
SELECT :conversation_id,
       coalesce((SELECT seq FROM turnstore_session_marks
                  WHERE conversation_id = :conversation_id
                  ORDER BY seq DESC LIMIT 1), 0) + 1,
       :kind, :position, :slot;

-- name: agents_write_outcome
-- A session's write already applied (retried after its reply was lost), and its outcome.
SELECT outcome FROM turnstore_session_writes
 WHERE conversation_id = :conversation_id AND write_id = :write_id;

-- name: agents_record_write
INSERT INTO turnstore_session_writes (conversation_id, write_id, outcome)
VALUES (:conversation_id, :write_id, :outcome);

-- Erasing a conversation (store/erase.py): every statement names the conversation. The
-- turns are found through the two partial indexes that together hold them all (keyed and
-- keyless: 0002_stable_plans.sql).

-- name: erase_live_turns
SELECT id, status FROM turnstore_turns
 WHERE conversation_id = :conversation_id AND status IN ('queued', 'running');

-- name: erase_begin
INSERT INTO turnstore_erasures (conversation_id) VALUES (:conversation_id);

-- name: erase_messages
DELETE FROM turnstore_messages WHERE conversation_id = :conversation_id;

-- name: erase_staged_steps
DELETE FROM turnstore_staged_steps WHERE conversation_id = :conversation_id;

-- name: erase_marks
DELETE FROM turnstore_session_marks WHERE conversation_id = :conversation_id;

-- name: erase_writes
DELETE FROM turnstore_session_writes WHERE conversation_id = :conversation_id;

-- name: erase_turns
DELETE FROM turnstore_turns
 WHERE conversation_id = :conversation_id
   AND id IN (SELECT id FROM turnstore_turns
               WHERE conversation_id = :conversation_id AND idempotency_key IS NOT NULL
              UNION ALL
              SELECT id FROM turnstore_turns
               WHERE conversation_id = :conversation_id AND idempotency_key IS NULL);

-- name: erase_conversation
DELETE FROM turnstore_conversations WHERE id = :conversation_id;

-- name: erase_end
DELETE FROM turnstore_erasures WHERE conversation_id = :conversation_id;

-- Resuming a running turn by id from another Store (store/resume.py: a restarted HTTP
-- service, python -m store serve), and the service's reads (store/server/).

-- name: resume_turn
-- A turn's conversation, state and fencing token, and where its next step goes.
SELECT t.conversation_id, t.status, t.steps, t.epoch,
       coalesce((SELECT position FROM turnstore_messages
                  WHERE conversation_id = t.conversation_id
                  ORDER BY position DESC LIMIT 1), -1) + 1 AS next_position
  FROM turnstore_turns t WHERE t.id = :turn_id;

-- name: turn_in_conversation
-- resume_turn's columns for a turn of a known conversation (under its lock).
SELECT t.conversation_id, t.status, t.steps, t.epoch
  FROM turnstore_turns t WHERE t.id = :turn_id AND t.conversation_id = :conversation_id;

-- name: conversation_exists
SELECT epoch FROM turnstore_conversations WHERE id = :conversation_id;

-- name: message_at
-- One message by position, as the history query's columns, with the tool rows of its step
-- when it is an assistant message (its calls are read from them).
SELECT position, role, turn_id, step, tool_call_count, content, tool_call_id, tool_name,
       tool_arguments, tool_call_data, is_error, created_at
  FROM turnstore_messages
 WHERE conversation_id = :conversation_id AND position >= :position
   AND position <= :position + coalesce(
         (SELECT CASE WHEN h.role = 'assistant' THEN h.tool_call_count ELSE 0 END
            FROM turnstore_messages h
           WHERE h.conversation_id = :conversation_id AND h.position = :position), 0)
 ORDER BY position;

-- Usage (0011_usage.sql; store/usage.py).

-- name: usage_insert
-- Numbered after the turn's last report; run under the conversation's lock.
INSERT INTO turnstore_usage
    (turn_id, seq, conversation_id, step, usage_id, model, prompt_tokens,
     completion_tokens, cache_read_tokens, cache_creation_tokens, cost_nano_usd)
SELECT CAST(:turn_id AS text),
       coalesce((SELECT u.seq FROM turnstore_usage u
                  WHERE u.conversation_id = :conversation_id AND u.turn_id = :turn_id
                  ORDER BY u.seq DESC LIMIT 1), 0) + 1,
       CAST(:conversation_id AS text), CAST(:step AS integer), CAST(:usage_id AS text),
       CAST(:model AS text), CAST(:prompt_tokens AS bigint),
       CAST(:completion_tokens AS bigint), CAST(:cache_read_tokens AS bigint),
       CAST(:cache_creation_tokens AS bigint), CAST(:cost_nano_usd AS bigint)
RETURNING seq, created_at;

-- name: usage_by_id
SELECT seq, step, usage_id, model, prompt_tokens, completion_tokens, cache_read_tokens,
       cache_creation_tokens, cost_nano_usd, created_at
  FROM turnstore_usage
 WHERE conversation_id = :conversation_id AND turn_id = :turn_id AND usage_id = :usage_id;

-- name: usage_of_turn
-- By turn id alone: the turn's conversation first (the key of usage starts with it).
SELECT seq, step, usage_id, model, prompt_tokens, completion_tokens, cache_read_tokens,
       cache_creation_tokens, cost_nano_usd, created_at
  FROM turnstore_usage
 WHERE conversation_id = (SELECT t.conversation_id FROM turnstore_turns t
                           WHERE t.id = :turn_id LIMIT 1)
   AND turn_id = :turn_id
 ORDER BY seq;

-- name: usage_by_turn
-- Sums per turn, for the turns whose user message is at :from_position or later (a
-- history window's turns).
SELECT u.turn_id, count(*) AS reports, sum(u.prompt_tokens) AS prompt_tokens,
       sum(u.completion_tokens) AS completion_tokens,
       sum(u.cache_read_tokens) AS cache_read_tokens,
       sum(u.cache_creation_tokens) AS cache_creation_tokens,
       sum(u.cost_nano_usd) AS cost_nano_usd, count(u.cost_nano_usd) AS costed
  FROM turnstore_usage u
 WHERE u.conversation_id = :conversation_id
   AND u.turn_id IN (SELECT m.turn_id FROM turnstore_messages m
                      WHERE m.conversation_id = :conversation_id AND m.role = 'user'
                        AND m.position >= :from_position)
 GROUP BY u.turn_id;

-- name: usage_total
-- A conversation's sums: every usage row of the conversation (a few per turn).
SELECT count(*) AS reports, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens,
       sum(cache_read_tokens) AS cache_read_tokens,
       sum(cache_creation_tokens) AS cache_creation_tokens,
       sum(cost_nano_usd) AS cost_nano_usd, count(cost_nano_usd) AS costed
  FROM turnstore_usage WHERE conversation_id = :conversation_id;
