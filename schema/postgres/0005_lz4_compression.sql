-- turnstore schema, version 5, PostgreSQL: compress large messages with LZ4.
--
-- Tool results and arguments of a few kilobytes are stored compressed (TOAST). With
-- PostgreSQL's default, pglz, compressing them was about a tenth of the server's work per
-- step under load; LZ4 compresses several times faster at a similar ratio. Only values
-- written from now on use it (existing ones stay as they are, readable as before). A server
-- built without LZ4 support keeps pglz: nothing else depends on the method.
DO $$
BEGIN
    IF 'lz4' = ANY ((SELECT enumvals FROM pg_settings
                      WHERE name = 'default_toast_compression')::text[]) THEN
        ALTER TABLE turnstore_messages
            ALTER COLUMN content SET COMPRESSION lz4,
            ALTER COLUMN tool_arguments SET COMPRESSION lz4,
            ALTER COLUMN tool_call_data SET COMPRESSION lz4;
        ALTER TABLE turnstore_staged_steps ALTER COLUMN payload SET COMPRESSION lz4;
    END IF;
END $$;
