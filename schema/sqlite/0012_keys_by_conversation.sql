-- turnstore schema, version 12, SQLite: staged steps carry their conversation, as in
-- postgres/0012_keys_by_conversation.sql (read it for why: PostgreSQL's tables can then be
-- sharded by conversation, and for the four steps 12 to 15). A nullable column, filled
-- from its turn for the rows there are and, by a trigger, for a row that release 11's code
-- inserts without it. 15 rebuilds the table with it NOT NULL in its key.
--
-- turnstore: expand

ALTER TABLE turnstore_staged_steps ADD COLUMN conversation_id TEXT;

CREATE TRIGGER turnstore_staged_steps_conversation AFTER INSERT ON turnstore_staged_steps
WHEN NEW.conversation_id IS NULL
BEGIN
    UPDATE turnstore_staged_steps
       SET conversation_id = (SELECT t.conversation_id FROM turnstore_turns t
                               WHERE t.id = NEW.turn_id)
     WHERE turn_id = NEW.turn_id AND step = NEW.step;
END;

UPDATE turnstore_staged_steps
   SET conversation_id = (SELECT t.conversation_id FROM turnstore_turns t
                           WHERE t.id = turnstore_staged_steps.turn_id)
 WHERE conversation_id IS NULL;
