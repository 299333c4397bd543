-- Least privilege for the DLQ tooling and the retention purge.
--
-- dlq_operator (NOLOGIN): what `python -m ingest_tasks.dlq` needs and no more. It reads and
-- deletes every tenant's dead letters through policies of its own (not BYPASSRLS: every other
-- table keeps hiding other tenants' rows from it), and it may SET ROLE ingest_writer, which is how
-- a replayed message is stored, under the writer's row-level security. NOINHERIT: the writer's
-- privileges are not its own, so outside that SET ROLE it cannot write ts_measure (PostgreSQL 16+
-- takes the grant's INHERIT option from this attribute, 15 and older use the attribute itself).
-- Production logs in as a LOGIN role that is a member of dlq_operator (deploy/postgres/).
--
-- ingest_purge_dead_letters: the beat-scheduled purge runs inside a worker, whose login is only
-- a member of ingest_writer and must not read other tenants' dead letters. The function deletes
-- one bounded batch of rows older than N days as its owner and tells the caller how many; the
-- caller calls it again, a transaction per batch, until a batch comes back short.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dlq_operator') THEN
        CREATE ROLE dlq_operator NOLOGIN NOINHERIT;
    END IF;
END
$$;
GRANT ingest_writer TO dlq_operator;

GRANT USAGE ON SCHEMA public TO dlq_operator;
GRANT SELECT, DELETE ON ingest_errors TO dlq_operator;
-- SELECT ... FOR UPDATE (replay and purge lock the rows they work on, SKIP LOCKED) needs UPDATE on
-- a column and an UPDATE policy's USING. The restrictive policy's WITH CHECK (false) refuses
-- every real UPDATE, also of rows the tenant policy would let through with app.tenant_id set.
GRANT UPDATE (id) ON ingest_errors TO dlq_operator;
CREATE POLICY operator_reads ON ingest_errors FOR SELECT TO dlq_operator USING (true);
CREATE POLICY operator_deletes ON ingest_errors FOR DELETE TO dlq_operator USING (true);
CREATE POLICY operator_locks ON ingest_errors FOR UPDATE TO dlq_operator USING (true);
CREATE POLICY operator_never_updates ON ingest_errors AS RESTRICTIVE FOR UPDATE TO dlq_operator
    USING (true) WITH CHECK (false);

-- The table's owner is under FORCE ROW LEVEL SECURITY like everyone else; the purge function runs
-- as its owner, the same role, and must see every row. The owner loses nothing by it: it could
-- turn row-level security off on its own table anyway. Whoever owns the table now, not the role
-- that ran this migration: ownership may be handed on (deploy/postgres/hand-over.sql).
CREATE POLICY owner_rows ON ingest_errors
    USING (current_user = (SELECT pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c
                           WHERE c.oid = 'public.ingest_errors'::regclass));

CREATE FUNCTION ingest_purge_dead_letters(older_than_days integer, batch_size integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
-- Pinned: a caller's search_path (or temporary schema) cannot put its own objects in the way.
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    removed integer;
BEGIN
    IF older_than_days IS NULL OR older_than_days < 0 THEN
        RAISE EXCEPTION 'older_than_days must be 0 or more, not %', older_than_days
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF batch_size IS NULL OR batch_size < 1 OR batch_size > 50000 THEN
        RAISE EXCEPTION 'batch_size must be between 1 and 50000, not %', batch_size
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- SKIP LOCKED: rows an operator is replaying or purging now are left to that operator.
    DELETE FROM public.ingest_errors WHERE id IN (
        SELECT id FROM public.ingest_errors
        WHERE ts < now() - older_than_days * interval '1 day'
        ORDER BY id LIMIT batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END
$$;

REVOKE ALL ON FUNCTION ingest_purge_dead_letters(integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ingest_purge_dead_letters(integer, integer) TO ingest_writer;
