-- Telemetry retention (TELEMETRY_RETENTION_DAYS): what beat's daily purge calls, as the workers'
-- role, to remove measurements and device events older than N days.
--
-- ingest_purge_telemetry runs as its owner (the tables' owner), like ingest_purge_dead_letters
-- (0008): a worker's login is only a member of ingest_writer and may neither delete rows nor drop
-- chunks. One call does one bounded step and returns what it did; the caller calls again, a
-- transaction per call, until a call deletes fewer rows than the batch:
-- - ts_measure a TimescaleDB hypertable: drop_chunks drops every chunk whose whole time range is
--   older than the cutoff (DDL, no row is read, no dead tuples, no vacuum). Rows in the chunk that
--   straddles the cutoff stay until a later run: at most one chunk interval (1 day, 0003) longer.
-- - ts_measure a plain table: up to batch_size rows older than the cutoff are deleted, by ctid.
--   They are found by a scan that stops at batch_size rows; old rows lie mostly at the table's
--   start, and a run's last, short batch reads the table once. No index on ts for it: a B-tree
--   costs every stored point an index insert (and 11 MB per 500,000 rows), and a BRIN index stops
--   helping once deleted space is reused (a range keeps its oldest ts after its rows are gone).
-- - device_event (always a plain table): by ts the same way, in the room the batch has left.
-- cmd_ack is kept: an acknowledgement is a command's outcome, one row per command, not a series
-- that grows with time, and its own clock (ts_exec) is the device's and may be missing.

-- Whether ts_measure is a hypertable, asked of TimescaleDB's catalog only where it is installed.
CREATE FUNCTION ingest_ts_measure_is_hypertable() RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found boolean;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN false;
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT FROM timescaledb_information.hypertables '
            'WHERE hypertable_schema = ''public'' AND hypertable_name = ''ts_measure'')' INTO found;
    RETURN found;
END
$$;
REVOKE ALL ON FUNCTION ingest_ts_measure_is_hypertable() FROM PUBLIC;

-- Under FORCE ROW LEVEL SECURITY the owner too sees no row without a tenant set; the purge runs
-- as the owner and must find every tenant's old rows. TO pg_database_owner, not to everyone like
-- 0008's owner_rows: a policy for everyone is OR-ed into every tenant's query, and an OR with an
-- arm the planner cannot decide keeps a reader's query off the index on tenant_id. Only the
-- database's owner is a member of pg_database_owner; the tables' owner is that role in every
-- deployment (deploy/postgres/init-roles.sh), and a superuser owner bypasses row-level security.
-- Reading and deleting only: the owner still inserts and updates nothing past the tenant policy.
CREATE POLICY owner_reads ON ts_measure FOR SELECT TO pg_database_owner
    USING (current_user = (SELECT pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c
                           WHERE c.oid = 'public.ts_measure'::regclass));
CREATE POLICY owner_deletes ON ts_measure FOR DELETE TO pg_database_owner
    USING (current_user = (SELECT pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c
                           WHERE c.oid = 'public.ts_measure'::regclass));
CREATE POLICY owner_reads ON device_event FOR SELECT TO pg_database_owner
    USING (current_user = (SELECT pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c
                           WHERE c.oid = 'public.device_event'::regclass));
CREATE POLICY owner_deletes ON device_event FOR DELETE TO pg_database_owner
    USING (current_user = (SELECT pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c
                           WHERE c.oid = 'public.device_event'::regclass));

CREATE FUNCTION ingest_purge_telemetry(older_than_days integer, batch_size integer,
                                       OUT chunks_dropped integer, OUT rows_deleted integer)
LANGUAGE plpgsql SECURITY DEFINER
-- Pinned: a caller's search_path (or temporary schema) cannot put its own objects in the way.
SET search_path = pg_catalog, pg_temp
-- Dropping a chunk waits for every transaction that has read it (a long dashboard query), and
-- while it waits every new query of that chunk waits behind it: give up instead, and let the
-- next run drop it.
SET lock_timeout = '10s'
AS $$
DECLARE
    cutoff timestamptz;
    deleted integer;
    statement text;
BEGIN
    -- 0 means "off" to the setting; here it would mean "everything": refused, not obeyed.
    IF older_than_days IS NULL OR older_than_days < 1 THEN
        RAISE EXCEPTION 'older_than_days must be 1 or more, not %', older_than_days
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF batch_size IS NULL OR batch_size < 1 OR batch_size > 50000 THEN
        RAISE EXCEPTION 'batch_size must be between 1 and 50000, not %', batch_size
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    cutoff := now() - older_than_days * interval '1 day';
    chunks_dropped := 0;
    rows_deleted := 0;
    IF public.ingest_ts_measure_is_hypertable() THEN
        -- In TimescaleDB's own schema, wherever it was installed.
        SELECT format('SELECT count(*) FROM %s.drop_chunks(''public.ts_measure'', older_than => $1)',
                      extnamespace::regnamespace::text) INTO statement
        FROM pg_extension WHERE extname = 'timescaledb';
        EXECUTE statement INTO chunks_dropped USING cutoff;
    ELSE
        DELETE FROM public.ts_measure WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM public.ts_measure WHERE ts < cutoff LIMIT batch_size));
        GET DIAGNOSTICS rows_deleted = ROW_COUNT;
    END IF;
    IF rows_deleted < batch_size THEN
        DELETE FROM public.device_event WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM public.device_event WHERE ts < cutoff LIMIT batch_size - rows_deleted));
        GET DIAGNOSTICS deleted = ROW_COUNT;
        rows_deleted := rows_deleted + deleted;
    END IF;
END
$$;

REVOKE ALL ON FUNCTION ingest_purge_telemetry(integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ingest_purge_telemetry(integer, integer) TO ingest_writer;
