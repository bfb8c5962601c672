-- turnstore schema, version 10, SQLite: pop and clear on append-only history, and the
-- erasure of a whole conversation. The same tables and rules as
-- postgres/0010_session_marks_and_erasure.sql (read it for what they mean):
--   * turnstore_session_marks records each clear_session() and pop_item() of a session;
--     history is never rewritten for them. Marks are append-only like history;
--   * turnstore_session_writes records each write of a session by its id (a retried write
--     is answered with its first outcome);
--   * a DELETE of messages or marks is let through only for a conversation that the same
--     transaction recorded in turnstore_erasures (Store.delete_conversation does, and
--     removes the record before it commits). UPDATE stays refused.

CREATE TABLE turnstore_session_marks (
    conversation_id TEXT    NOT NULL REFERENCES turnstore_conversations (id),
    seq             INTEGER NOT NULL CHECK (seq >= 1),
    kind            TEXT    NOT NULL CHECK (kind IN ('clear', 'pop')),
    position        INTEGER NOT NULL CHECK (position >= 0),
    slot            INTEGER CHECK (slot >= 0),
    created_at      REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    PRIMARY KEY (conversation_id, seq),
    CONSTRAINT turnstore_mark_shape CHECK ((kind = 'clear') = (slot IS NULL))
);
CREATE INDEX turnstore_session_marks_by_kind
    ON turnstore_session_marks (conversation_id, kind, position);

-- The writes a session made (add_items, pop_item, clear_session), by the id the session
-- gave each: a write retried after its reply was lost finds its own record and is answered
-- with the outcome recorded (a pop returns the item it popped), never applied twice.
CREATE TABLE turnstore_session_writes (
    conversation_id TEXT        NOT NULL,
    write_id        TEXT        NOT NULL CHECK (write_id <> ''),
    outcome         TEXT,
    created_at      REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    PRIMARY KEY (conversation_id, write_id)
);

CREATE TABLE turnstore_erasures (
    conversation_id TEXT PRIMARY KEY
);

DROP TRIGGER turnstore_messages_no_delete;
CREATE TRIGGER turnstore_messages_no_delete BEFORE DELETE ON turnstore_messages
WHEN NOT EXISTS (SELECT 1 FROM turnstore_erasures WHERE conversation_id = OLD.conversation_id)
BEGIN
    SELECT RAISE(ABORT, 'turnstore: DELETE on turnstore_messages is refused: committed history is append-only (a whole conversation is erased with python -m store delete)');
END;

CREATE TRIGGER turnstore_session_marks_no_update BEFORE UPDATE ON turnstore_session_marks
BEGIN
    SELECT RAISE(ABORT, 'turnstore: UPDATE on turnstore_session_marks is refused: session marks are append-only');
END;
CREATE TRIGGER turnstore_session_marks_no_delete BEFORE DELETE ON turnstore_session_marks
WHEN NOT EXISTS (SELECT 1 FROM turnstore_erasures WHERE conversation_id = OLD.conversation_id)
BEGIN
    SELECT RAISE(ABORT, 'turnstore: DELETE on turnstore_session_marks is refused: session marks are append-only (a whole conversation is erased with python -m store delete)');
END;
