-- Measurements keyed by integers: ts_measure becomes a view over ts_point (one narrow row per
-- point), ts_series (one row per tenant, device and point) and ts_tenant (one row per tenant).
--
-- Why: every stored point inserted into a unique index on four text columns, and that insert was
-- about half of PostgreSQL's CPU per point (comparisons of text keys, 4 detoasts and memcmps per
-- level). The key is now (tenant_no int, series_id bigint, ts): integer comparisons, a third of
-- the width. Identifiers are stored once per series instead of on every row.
--
-- Row-level security holds on every table, on write and on read:
-- - ts_tenant and ts_series carry tenant_id and the usual policy on app.tenant_id.
-- - ts_point carries tenant_no; its policy compares it with the number of the tenant in
--   app.tenant_id, looked up once per statement (an InitPlan), not per row. A writer with tenant A
--   set can only write rows numbered A; since the key starts with tenant_no, nothing it writes can
--   collide with, and so block, a row of tenant B.
-- - ts_measure joins ts_point to ts_series on both series_id and tenant_no, so a row whose
--   series is another tenant's (which a writer could insert: no foreign key is checked per point,
--   as that would cost an index search per row) is in nobody's ts_measure, not even the owner's.
-- - the view is security_invoker: the caller's privileges and policies apply to the tables.
--
-- Series and tenants are never deleted: retention drops points (chunks, or batches of rows) and
-- leaves the series, a few hundred bytes per (tenant, device, point), for the next point of it.
--
-- Column privileges only on ts_point (as 0007 did for ts_measure): TimescaleDB copies a
-- hypertable's table privileges to its chunks, never its policies nor column privileges.
--
-- Upgrading: the rows of the ts_measure table are copied into the new tables before row-level
-- security is turned on, then the table is dropped and the view takes its name. This takes about
-- as long as writing the table once; workers of the previous version must be stopped first (they
-- call ingest_insert_staged, which is gone).

CREATE TABLE ts_tenant (
    tenant_no integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id text COLLATE "C" NOT NULL UNIQUE,
    UNIQUE (tenant_no, tenant_id)  -- what ts_series' foreign key refers to
);

CREATE TABLE ts_series (
    series_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_no integer NOT NULL,
    tenant_id text COLLATE "C" NOT NULL,
    device_id text COLLATE "C" NOT NULL,
    point_id  text COLLATE "C" NOT NULL,
    UNIQUE (tenant_id, device_id, point_id),
    -- A series' number and its tenant's id agree (checked once per new series, not per point).
    FOREIGN KEY (tenant_no, tenant_id) REFERENCES ts_tenant (tenant_no, tenant_id)
);

CREATE TABLE ts_point (
    tenant_no   integer NOT NULL,
    series_id   bigint NOT NULL,
    ts          timestamptz NOT NULL,
    v_num       double precision,
    v_bool      boolean,
    v_text      text,
    unit        text,
    meta        jsonb,
    ingested_at timestamptz NOT NULL DEFAULT now()
);
-- One row per series and instant (a redelivered point adds nothing); also the index for
-- series -> time queries. The chunks' copies are named <chunk>_ts_point_key (store.py).
CREATE UNIQUE INDEX ts_point_key ON ts_point (tenant_no, series_id, ts);

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb') THEN
        EXECUTE format('SELECT %s.create_hypertable(''public.ts_point'', ''ts'', '
                       'chunk_time_interval => interval ''1 day'')',
                       (SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'timescaledb'));
        RAISE NOTICE 'ts_point is a TimescaleDB hypertable';
    END IF;
END
$$;

-- The rows stored so far (run as the owner, before row-level security is on for these tables;
-- the owner reads ts_measure through 0009's owner_reads, a superuser past every policy).
INSERT INTO ts_tenant (tenant_id) SELECT DISTINCT tenant_id FROM ts_measure ORDER BY 1;
INSERT INTO ts_series (tenant_no, tenant_id, device_id, point_id)
SELECT t.tenant_no, m.tenant_id, m.device_id, m.point_id
FROM (SELECT DISTINCT tenant_id, device_id, point_id FROM ts_measure) m
JOIN ts_tenant t ON t.tenant_id = m.tenant_id
ORDER BY 2, 3, 4;
INSERT INTO ts_point (tenant_no, series_id, ts, v_num, v_bool, v_text, unit, meta, ingested_at)
SELECT s.tenant_no, s.series_id, m.ts, m.v_num, m.v_bool, m.v_text, m.unit, m.meta, m.ingested_at
FROM ts_measure m
JOIN ts_series s ON (s.tenant_id, s.device_id, s.point_id) = (m.tenant_id, m.device_id, m.point_id);

DROP FUNCTION ingest_insert_staged(text[], boolean);
DROP FUNCTION ingest_purge_telemetry(integer, integer);
DROP FUNCTION ingest_ts_measure_is_hypertable();
DROP TABLE ts_measure;

CREATE VIEW ts_measure WITH (security_invoker = true) AS
SELECT s.tenant_id, s.device_id, s.point_id, p.ts, p.v_num, p.v_bool, p.v_text, p.unit, p.meta,
       p.ingested_at
FROM ts_point p
JOIN ts_series s ON s.series_id = p.series_id AND s.tenant_no = p.tenant_no;
ALTER VIEW ts_measure ALTER COLUMN ingested_at SET DEFAULT now();

-- Row-level security. current_setting(..., true) is '' (not NULL) once a SET LOCAL has ended.
ALTER TABLE ts_tenant ENABLE ROW LEVEL SECURITY;
ALTER TABLE ts_tenant FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON ts_tenant
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE ts_series ENABLE ROW LEVEL SECURITY;
ALTER TABLE ts_series FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON ts_series
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE ts_point ENABLE ROW LEVEL SECURITY;
ALTER TABLE ts_point FORCE ROW LEVEL SECURITY;
-- The subquery is uncorrelated: PostgreSQL runs it once per statement (an InitPlan).
CREATE POLICY tenant_rows ON ts_point
    USING (tenant_no = (SELECT t.tenant_no FROM ts_tenant t
                        WHERE t.tenant_id = NULLIF(current_setting('app.tenant_id', true), '')))
    WITH CHECK (tenant_no = (SELECT t.tenant_no FROM ts_tenant t
                             WHERE t.tenant_id = NULLIF(current_setting('app.tenant_id', true), '')));

-- The owner (the purge function, an owner's own queries through ts_measure) reads every tenant's
-- rows and deletes points, as 0009 let it on ts_measure; TO pg_database_owner keeps these arms
-- out of a tenant's query plan.
CREATE POLICY owner_reads ON ts_tenant FOR SELECT TO pg_database_owner
    USING (current_user = (SELECT pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c
                           WHERE c.oid = 'public.ts_tenant'::regclass));
CREATE POLICY owner_reads ON ts_series FOR SELECT TO pg_database_owner
    USING (current_user = (SELECT pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c
                           WHERE c.oid = 'public.ts_series'::regclass));
CREATE POLICY owner_reads ON ts_point FOR SELECT TO pg_database_owner
    USING (current_user = (SELECT pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c
                           WHERE c.oid = 'public.ts_point'::regclass));
CREATE POLICY owner_deletes ON ts_point FOR DELETE TO pg_database_owner
    USING (current_user = (SELECT pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c
                           WHERE c.oid = 'public.ts_point'::regclass));

-- The series of (tenants[i], devices[i], points[i]), created where missing: rows (i, series_id).
-- With the caller's rights, app.tenant_id set to each tenant before its series, like every write.
-- New series are inserted in key order, so two workers creating the same ones never deadlock.
CREATE FUNCTION ingest_series_ids(tenants text[], devices text[], points text[])
RETURNS TABLE (i integer, series_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    tenant text;
    number integer;
BEGIN
    FOR tenant IN SELECT DISTINCT t FROM unnest(tenants) t ORDER BY 1 LOOP
        PERFORM set_config('app.tenant_id', tenant, true);
        INSERT INTO ts_tenant (tenant_id) VALUES (tenant) ON CONFLICT DO NOTHING;
        SELECT t.tenant_no INTO STRICT number FROM ts_tenant t WHERE t.tenant_id = tenant;
        INSERT INTO ts_series (tenant_no, tenant_id, device_id, point_id)
        SELECT DISTINCT number, tenant, u.d, u.p FROM unnest(tenants, devices, points) u(t, d, p)
        WHERE u.t = tenant ORDER BY 3, 4
        ON CONFLICT DO NOTHING;
        RETURN QUERY
        SELECT u.n::integer, s.series_id
        FROM unnest(tenants, devices, points) WITH ORDINALITY u(t, d, p, n)
        JOIN ts_series s ON s.tenant_id = u.t AND s.device_id = u.d AND s.point_id = u.p
        WHERE u.t = tenant;
    END LOOP;
END
$$;

-- A chunk's points, tenant by tenant: tenants[k]'s rows are elements upto[k-1]+1 .. upto[k] of
-- the other arrays (the worker sends them grouped by tenant). One call a chunk, as 0005 did, with
-- the caller's rights and app.tenant_id set to each tenant before its rows. The arrays are unnested
-- in the select list, in step: a function scan in FROM would first copy every row into a
-- tuplestore (measured: about a tenth of the statement's CPU).
CREATE FUNCTION ingest_insert_points(
    tenants text[], upto integer[], series bigint[], stamps timestamptz[], nums float8[],
    bools boolean[], texts text[], units text[], metas text[], check_conflicts boolean
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    k integer;
    lo integer := 1;
    number integer;
    added bigint;
    total bigint := 0;
BEGIN
    FOR k IN 1 .. coalesce(array_length(tenants, 1), 0) LOOP
        PERFORM set_config('app.tenant_id', tenants[k], true);
        SELECT t.tenant_no INTO number FROM ts_tenant t WHERE t.tenant_id = tenants[k];
        IF number IS NULL THEN
            RAISE EXCEPTION 'tenant % has no series yet', tenants[k]
                USING ERRCODE = 'foreign_key_violation', HINT = 'call ingest_series_ids first';
        END IF;
        IF check_conflicts THEN
            INSERT INTO ts_point (tenant_no, series_id, ts, v_num, v_bool, v_text, unit, meta)
            SELECT number, unnest(series[lo:upto[k]]), unnest(stamps[lo:upto[k]]), unnest(nums[lo:upto[k]]),
                   unnest(bools[lo:upto[k]]), unnest(texts[lo:upto[k]]), unnest(units[lo:upto[k]]),
                   unnest(metas[lo:upto[k]])::jsonb
            ON CONFLICT DO NOTHING;
        ELSE
            INSERT INTO ts_point (tenant_no, series_id, ts, v_num, v_bool, v_text, unit, meta)
            SELECT number, unnest(series[lo:upto[k]]), unnest(stamps[lo:upto[k]]), unnest(nums[lo:upto[k]]),
                   unnest(bools[lo:upto[k]]), unnest(texts[lo:upto[k]]), unnest(units[lo:upto[k]]),
                   unnest(metas[lo:upto[k]])::jsonb;
        END IF;
        GET DIAGNOSTICS added = ROW_COUNT;
        total := total + added;
        lo := upto[k] + 1;
    END LOOP;
    RETURN total;
END
$$;

-- INSERT INTO ts_measure still works (tools, ad-hoc loads): a row at a time through the series,
-- with the caller's rights and app.tenant_id as the caller set it, so the policies check every
-- row written as they check the worker's. A point already stored is skipped (and not counted), as
-- ON CONFLICT DO NOTHING would.
CREATE FUNCTION ingest_measure_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    added bigint;
BEGIN
    INSERT INTO ts_tenant (tenant_id) VALUES (NEW.tenant_id) ON CONFLICT DO NOTHING;
    INSERT INTO ts_series (tenant_no, tenant_id, device_id, point_id)
    SELECT t.tenant_no, t.tenant_id, NEW.device_id, NEW.point_id FROM ts_tenant t
    WHERE t.tenant_id = NEW.tenant_id
    ON CONFLICT DO NOTHING;
    INSERT INTO ts_point (tenant_no, series_id, ts, v_num, v_bool, v_text, unit, meta, ingested_at)
    SELECT s.tenant_no, s.series_id, NEW.ts, NEW.v_num, NEW.v_bool, NEW.v_text, NEW.unit, NEW.meta,
           coalesce(NEW.ingested_at, now())
    FROM ts_series s
    WHERE s.tenant_id = NEW.tenant_id AND s.device_id = NEW.device_id AND s.point_id = NEW.point_id
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS added = ROW_COUNT;
    RETURN CASE WHEN added > 0 THEN NEW END;
END
$$;
CREATE TRIGGER insert_points INSTEAD OF INSERT ON ts_measure
    FOR EACH ROW EXECUTE FUNCTION ingest_measure_insert();

-- Whether ts_point is a hypertable, asked of TimescaleDB's catalog only where it is installed.
CREATE FUNCTION ingest_ts_point_is_hypertable() RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found boolean;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN false;
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT FROM timescaledb_information.hypertables '
            'WHERE hypertable_schema = ''public'' AND hypertable_name = ''ts_point'')' INTO found;
    RETURN found;
END
$$;
REVOKE ALL ON FUNCTION ingest_ts_point_is_hypertable() FROM PUBLIC;

-- 0009's purge, on ts_point: whole chunks on TimescaleDB, a bounded batch of rows otherwise.
CREATE FUNCTION ingest_purge_telemetry(older_than_days integer, batch_size integer,
                                       OUT chunks_dropped integer, OUT rows_deleted integer)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '10s'
AS $$
DECLARE
    cutoff timestamptz;
    deleted integer;
    statement text;
BEGIN
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
    IF public.ingest_ts_point_is_hypertable() THEN
        SELECT format('SELECT count(*) FROM %s.drop_chunks(''public.ts_point'', older_than => $1)',
                      extnamespace::regnamespace::text) INTO statement
        FROM pg_extension WHERE extname = 'timescaledb';
        EXECUTE statement INTO chunks_dropped USING cutoff;
    ELSE
        DELETE FROM public.ts_point WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM public.ts_point WHERE ts < cutoff LIMIT batch_size));
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

-- Privileges: the view, the series and tenants as tables; ts_point by column only (0007).
GRANT SELECT ON ts_measure, ts_series, ts_tenant TO tenant_reader, ingest_writer;
GRANT INSERT ON ts_measure TO ingest_writer;
GRANT INSERT (tenant_id) ON ts_tenant TO ingest_writer;
GRANT INSERT (tenant_no, tenant_id, device_id, point_id) ON ts_series TO ingest_writer;
GRANT SELECT (tenant_no, series_id, ts, v_num, v_bool, v_text, unit, meta, ingested_at)
    ON ts_point TO tenant_reader, ingest_writer;
GRANT INSERT (tenant_no, series_id, ts, v_num, v_bool, v_text, unit, meta, ingested_at)
    ON ts_point TO ingest_writer;
GRANT EXECUTE ON FUNCTION ingest_series_ids(text[], text[], text[]) TO ingest_writer;
GRANT EXECUTE ON FUNCTION ingest_insert_points(text[], integer[], bigint[], timestamptz[], float8[],
    boolean[], text[], text[], text[], boolean) TO ingest_writer;

-- The chunks created above (the copied rows) and any other child of a table with row-level
-- security: reached only through the parent (0007).
DO $$
DECLARE
    child regclass;
BEGIN
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
