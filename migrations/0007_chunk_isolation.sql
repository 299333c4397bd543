-- Tenant isolation that holds on TimescaleDB's chunks: the tenant roles hold column privileges on
-- ts_measure instead of table privileges, and no privilege at all on its chunks.
-- Why: a chunk is a table of its own that row-level security does not cover. TimescaleDB gives
-- every new chunk a copy of the hypertable's table privileges and passes every GRANT on the
-- hypertable on to the chunks that exist, but not its policies (timescale/timescaledb#7830). So
-- tenant_reader could read every tenant's rows from _timescaledb_internal._hyper_1_1_chunk, the
-- writer could write any tenant's rows into it, and pg_stats showed both the chunks' most common
-- tenant and device ids. Reads and writes through ts_measure need no privilege on its chunks:
-- PostgreSQL checks the hypertable's, and applies the hypertable's policies to every chunk.
-- How: TimescaleDB copies only the table-level privileges (pg_class.relacl) to a new chunk,
-- never column privileges, so chunks made from now on give these roles nothing; the chunks that
-- exist lose what they were given, here. On plain PostgreSQL ts_measure has no children and the
-- roles can do with it exactly what they could before.
-- Never grant these roles a table privilege on ts_measure again: it would reach every chunk. A
-- column added later needs its own column grants, and those too reach the chunks that exist, so
-- revoke them there afterwards as below.

DO $$
DECLARE
    columns text;
    child regclass;
BEGIN
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO columns
    FROM pg_attribute WHERE attrelid = 'ts_measure'::regclass AND attnum > 0 AND NOT attisdropped;
    -- Revoking a table privilege revokes the column privileges too: this comes first.
    REVOKE ALL ON ts_measure FROM tenant_reader, ingest_writer;
    EXECUTE format('GRANT SELECT (%s) ON ts_measure TO tenant_reader, ingest_writer', columns);
    EXECUTE format('GRANT INSERT (%s) ON ts_measure TO ingest_writer', columns);

    -- Every child (chunk, inheritance child, partition, at any depth) of a table with row-level
    -- security: these roles, and every role through PUBLIC, reach it only through its parent.
    FOR child IN
        WITH RECURSIVE children AS (
            SELECT i.inhrelid AS oid FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
            WHERE p.relrowsecurity
            UNION SELECT i.inhrelid FROM pg_inherits i JOIN children c ON i.inhparent = c.oid
        )
        SELECT oid::regclass FROM children
    LOOP
        EXECUTE format('REVOKE ALL ON %s FROM PUBLIC, tenant_reader, ingest_writer', child);
    END LOOP;
END
$$;
