-- A message's points in one row: ts_reading holds one row per device and instant, its points in
-- arrays (series ids, values, units), its meta once. ts_measure becomes a view over both tables.
--
-- Why: every stored point was a heap row, a WAL record and a search of the unique index from its
-- root, and that per-row work was most of PostgreSQL's CPU per point (0011, 0012). A telemetry
-- message is one device at one instant: stored as one row, its five points cost one heap row, one
-- index entry and one meta. Measured on the writer's backend (100,000 messages of 5 points, same
-- run): 3.3-4.7 us a point through ts_point, 1.3 us through ts_reading.
--
-- At most one row per (tenant, device, point, ts), as before:
-- - a reading's key is (device_no, ts, tenant_no): a device has at most one reading an instant,
--   and the worker never puts a series twice into one reading;
-- - a point whose device already has a reading at that instant, from another message and not
--   among its points, is stored apart, in ts_point (whose key is per series, as before). A
--   redelivered message finds its reading (or its points in ts_point) and adds nothing.
-- - ts_point holds only such points, always beside a reading of the same device and instant: the
--   purge deletes ts_point's rows before the readings they belong with.
--
-- Row-level security, as 0011: ts_device carries tenant_id; ts_reading carries tenant_no, checked
-- against the tenant of app.tenant_id on write and on read. The view joins each point of a
-- reading to its series on the series id and the device: a point a writer files under another
-- device's reading shows in nobody's ts_measure. A reading a writer files under its own tenant's
-- number but another tenant's device shows to no tenant either (each tenant role sees only its
-- own readings and its own series, so the pair never meets); only a role past the tenant
-- policies (the superuser, the owner) would see it, under that device's identifiers. The join does not also compare
-- the reading's tenant_no with the series' (as the ts_point arm does): PostgreSQL takes the two
-- equalities, device and tenant, for independent and underestimates the join tenfold, and then
-- joins every reading to each series of its device before unnesting, ten times the work of a
-- scan (SELECT count(*) FROM ts_measure: 780 ms against 80 ms, 600,000 points).
--
-- Reads: a query for one device's points goes from ts_series (its index on tenant, device, point)
-- to that device's readings by (device_no, ts), and reads each reading's arrays.
--
-- Upgrading: ts_point's rows are gathered into readings (one per device, instant, meta and
-- ingested_at; what does not fit one stays in ts_point) before row-level security is on for
-- ts_reading. Workers of the previous version must be stopped first: they call
-- ingest_insert_points, which is gone (their chunks wait, retried, until the new workers run).

-- One row per tenant and device; a series belongs to one device.
CREATE TABLE ts_device (
    device_no bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_no integer NOT NULL,
    tenant_id text COLLATE "C" NOT NULL,
    device_id text COLLATE "C" NOT NULL,
    UNIQUE (tenant_id, device_id),
    UNIQUE (device_no, tenant_id, device_id),  -- what ts_series' foreign key refers to
    FOREIGN KEY (tenant_no, tenant_id) REFERENCES ts_tenant (tenant_no, tenant_id)
);

-- The owner, under FORCE ROW LEVEL SECURITY, may only read these tables (0011's owner_reads):
-- lifted for this transaction's copies, and forced again below.
ALTER TABLE ts_series NO FORCE ROW LEVEL SECURITY;
ALTER TABLE ts_point NO FORCE ROW LEVEL SECURITY;

INSERT INTO ts_device (tenant_no, tenant_id, device_id)
SELECT DISTINCT tenant_no, tenant_id, device_id FROM ts_series ORDER BY 2, 3;
ALTER TABLE ts_series ADD COLUMN device_no bigint;
UPDATE ts_series s SET device_no = d.device_no
FROM ts_device d WHERE d.tenant_id = s.tenant_id AND d.device_id = s.device_id;
ALTER TABLE ts_series ALTER COLUMN device_no SET NOT NULL;
-- A series' device number, tenant and device agree (checked once per new series, not per point).
ALTER TABLE ts_series ADD FOREIGN KEY (device_no, tenant_id, device_id)
    REFERENCES ts_device (device_no, tenant_id, device_id);

CREATE TABLE ts_reading (
    tenant_no   integer NOT NULL,
    device_no   bigint NOT NULL,
    ts          timestamptz NOT NULL,
    series      bigint[] NOT NULL,        -- the points' series, in the message's order
    v_num       double precision[],       -- each array NULL, or one element per series
    v_bool      boolean[],
    v_text      text[],
    unit        text[],
    meta        jsonb,
    ingested_at timestamptz NOT NULL DEFAULT now()
);
-- The device number compared first decides almost every comparison alone (as the series id does
-- in 0012's key); tenant_no in the key keeps a reading a writer files under another tenant's
-- device from colliding with, and so blocking, that tenant's.
CREATE UNIQUE INDEX ts_reading_key ON ts_reading (device_no, ts, tenant_no);

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb') THEN
        -- No index on ts alone (0012): the key serves every query, chunks are dropped by range.
        EXECUTE format('SELECT %s.create_hypertable(''public.ts_reading'', ''ts'', '
                       'chunk_time_interval => interval ''1 day'', create_default_indexes => false)',
                       (SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'timescaledb'));
        RAISE NOTICE 'ts_reading is a TimescaleDB hypertable';
    END IF;
END
$$;

-- The points stored so far, gathered into readings: one per device, instant, meta and
-- ingested_at; the first such group of a device and instant (by ingested_at) is its reading, the
-- points of any other stay in ts_point beside it.
INSERT INTO ts_reading (tenant_no, device_no, ts, series, v_num, v_bool, v_text, unit, meta, ingested_at)
SELECT p.tenant_no, s.device_no, p.ts,
       array_agg(p.series_id ORDER BY p.series_id), array_agg(p.v_num ORDER BY p.series_id),
       array_agg(p.v_bool ORDER BY p.series_id), array_agg(p.v_text ORDER BY p.series_id),
       array_agg(p.unit ORDER BY p.series_id), p.meta, p.ingested_at
FROM ts_point p
JOIN ts_series s ON s.series_id = p.series_id AND s.tenant_no = p.tenant_no
GROUP BY p.tenant_no, s.device_no, p.ts, p.meta, p.ingested_at
ORDER BY p.ingested_at
ON CONFLICT DO NOTHING;
DELETE FROM ts_point p
USING ts_series s, ts_reading r
WHERE s.series_id = p.series_id AND s.tenant_no = p.tenant_no
  AND r.device_no = s.device_no AND r.ts = p.ts AND r.tenant_no = p.tenant_no
  AND p.series_id = ANY (r.series);

ALTER TABLE ts_series FORCE ROW LEVEL SECURITY;
ALTER TABLE ts_point FORCE ROW LEVEL SECURITY;

ALTER TABLE ts_device ENABLE ROW LEVEL SECURITY;
ALTER TABLE ts_device FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON ts_device
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
CREATE POLICY owner_reads ON ts_device FOR SELECT TO pg_database_owner
    USING (current_user = (SELECT pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c
                           WHERE c.oid = 'public.ts_device'::regclass));
ALTER TABLE ts_reading ENABLE ROW LEVEL SECURITY;
ALTER TABLE ts_reading FORCE ROW LEVEL SECURITY;
-- The subquery is uncorrelated: PostgreSQL runs it once per statement (an InitPlan).
CREATE POLICY tenant_rows ON ts_reading
    USING (tenant_no = (SELECT t.tenant_no FROM ts_tenant t
                        WHERE t.tenant_id = NULLIF(current_setting('app.tenant_id', true), '')))
    WITH CHECK (tenant_no = (SELECT t.tenant_no FROM ts_tenant t
                             WHERE t.tenant_id = NULLIF(current_setting('app.tenant_id', true), '')));
CREATE POLICY owner_reads ON ts_reading FOR SELECT TO pg_database_owner
    USING (current_user = (SELECT pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c
                           WHERE c.oid = 'public.ts_reading'::regclass));
CREATE POLICY owner_deletes ON ts_reading FOR DELETE TO pg_database_owner
    USING (current_user = (SELECT pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c
                           WHERE c.oid = 'public.ts_reading'::regclass));

CREATE OR REPLACE VIEW ts_measure WITH (security_invoker = true) AS
SELECT s.tenant_id, s.device_id, s.point_id, r.ts, u.v_num, u.v_bool, u.v_text, u.unit, r.meta,
       r.ingested_at
FROM ts_reading r
CROSS JOIN LATERAL unnest(r.series, r.v_num, r.v_bool, r.v_text, r.unit) u(series_id, v_num, v_bool, v_text, unit)
JOIN ts_series s ON s.series_id = u.series_id AND s.device_no = r.device_no
UNION ALL
SELECT s.tenant_id, s.device_id, s.point_id, p.ts, p.v_num, p.v_bool, p.v_text, p.unit, p.meta,
       p.ingested_at
FROM ts_point p
JOIN ts_series s ON s.series_id = p.series_id AND s.tenant_no = p.tenant_no;

-- A reading as the worker sends it: one element of ingest_insert_readings' array.
CREATE TYPE ingest_reading AS (
    device_no bigint, ts timestamptz, series bigint[], v_num double precision[], v_bool boolean[],
    v_text text[], unit text[], meta jsonb
);

-- The series of (tenants[i], devices[i], points[i]) and their devices, created where missing:
-- rows (i, series_id, device_no). With the caller's rights, app.tenant_id set to each tenant
-- before its series, like every write. New rows are inserted in key order, so two workers
-- creating the same ones never deadlock. Each tenant's statements read only the slice from its
-- first entry to its last: the worker sends the entries sorted by tenant, so a chunk of thousands
-- of tenants costs time in proportion to its entries, not to tenants x entries (3,000 tenants of
-- 5 points: 24 s with a filter over every entry per tenant). The filter on the tenant keeps any
-- other order correct.
CREATE FUNCTION ingest_series(tenants text[], devices text[], points text[])
RETURNS TABLE (i integer, series_id bigint, device_no bigint)
LANGUAGE plpgsql AS $$
DECLARE
    tenant text;
    first integer;
    last integer;
    number integer;
    part_tenants text[];
    part_devices text[];
    part_points text[];
BEGIN
    FOR tenant, first, last IN
        SELECT u.t, min(u.n), max(u.n) FROM unnest(tenants) WITH ORDINALITY u(t, n) GROUP BY u.t ORDER BY u.t
    LOOP
        PERFORM set_config('app.tenant_id', tenant, true);
        part_tenants := tenants[first:last];
        part_devices := devices[first:last];
        part_points := points[first:last];
        INSERT INTO ts_tenant (tenant_id) VALUES (tenant) ON CONFLICT DO NOTHING;
        SELECT t.tenant_no INTO STRICT number FROM ts_tenant t WHERE t.tenant_id = tenant;
        INSERT INTO ts_device (tenant_no, tenant_id, device_id)
        SELECT DISTINCT number, tenant, u.d FROM unnest(part_tenants, part_devices) u(t, d)
        WHERE u.t = tenant ORDER BY 3
        ON CONFLICT DO NOTHING;
        INSERT INTO ts_series (tenant_no, tenant_id, device_id, point_id, device_no)
        SELECT DISTINCT number, tenant, u.d, u.p, d.device_no
        FROM unnest(part_tenants, part_devices, part_points) u(t, d, p)
        JOIN ts_device d ON d.tenant_id = u.t AND d.device_id = u.d
        WHERE u.t = tenant ORDER BY 3, 4
        ON CONFLICT DO NOTHING;
        RETURN QUERY
        SELECT (first - 1 + u.n)::integer, s.series_id, s.device_no
        FROM unnest(part_tenants, part_devices, part_points) WITH ORDINALITY u(t, d, p, n)
        JOIN ts_series s ON s.tenant_id = u.t AND s.device_id = u.d AND s.point_id = u.p
        WHERE u.t = tenant;
    END LOOP;
END
$$;

-- A chunk's readings, tenant by tenant: tenants[k]'s are elements upto[k-1]+1 .. upto[k] of
-- readings (the worker sends them grouped by tenant); the points added. One call a chunk, with
-- the caller's rights and app.tenant_id set to each tenant before its readings.
-- Without check_conflicts a reading already stored raises unique_violation on ts_reading_key
-- (the worker's first try: no conflict check, one index search a reading less). With it, a
-- reading whose device already has one at that instant is not inserted; its points that reading
-- lacks are stored apart in ts_point (a redelivered point adds nothing there either).
CREATE FUNCTION ingest_insert_readings(
    tenants text[], upto integer[], readings ingest_reading[], check_conflicts boolean
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    k integer;
    lo integer := 1;
    number integer;
    added bigint;
    total bigint := 0;
    part ingest_reading[];
BEGIN
    FOR k IN 1 .. coalesce(array_length(tenants, 1), 0) LOOP
        PERFORM set_config('app.tenant_id', tenants[k], true);
        SELECT t.tenant_no INTO number FROM ts_tenant t WHERE t.tenant_id = tenants[k];
        IF number IS NULL THEN
            RAISE EXCEPTION 'tenant % has no series yet', tenants[k]
                USING ERRCODE = 'foreign_key_violation', HINT = 'call ingest_series first';
        END IF;
        part := readings[lo:upto[k]];
        IF check_conflicts THEN
            WITH stored AS (
                INSERT INTO ts_reading (tenant_no, device_no, ts, series, v_num, v_bool, v_text, unit, meta)
                SELECT number, r.device_no, r.ts, r.series, r.v_num, r.v_bool, r.v_text, r.unit, r.meta
                FROM unnest(part) r
                ON CONFLICT DO NOTHING
                RETURNING cardinality(series) AS n
            )
            SELECT coalesce(sum(n), 0) INTO added FROM stored;
            total := total + added;
            -- Sees the readings just inserted, which hold all of their own points. In the
            -- readings' order: of two messages naming a point at the same instant, the first wins.
            INSERT INTO ts_point (tenant_no, series_id, ts, v_num, v_bool, v_text, unit, meta)
            SELECT number, p.series_id, r.ts, p.v_num, p.v_bool, p.v_text, p.unit, r.meta
            FROM unnest(part) WITH ORDINALITY r(device_no, ts, series, v_num, v_bool, v_text,
                                                               unit, meta, n)
            JOIN ts_reading stored ON stored.device_no = r.device_no AND stored.ts = r.ts
                                  AND stored.tenant_no = number
            CROSS JOIN LATERAL unnest(r.series, r.v_num, r.v_bool, r.v_text, r.unit) WITH ORDINALITY
                p(series_id, v_num, v_bool, v_text, unit, m)
            WHERE p.series_id <> ALL (stored.series)
            ORDER BY r.n, p.m
            ON CONFLICT DO NOTHING;
            GET DIAGNOSTICS added = ROW_COUNT;
        ELSE
            INSERT INTO ts_reading (tenant_no, device_no, ts, series, v_num, v_bool, v_text, unit, meta)
            SELECT number, r.device_no, r.ts, r.series, r.v_num, r.v_bool, r.v_text, r.unit, r.meta
            FROM unnest(part) r;
            SELECT coalesce(sum(cardinality(r.series)), 0) INTO added FROM unnest(part) r;
        END IF;
        total := total + added;
        lo := upto[k] + 1;
    END LOOP;
    RETURN total;
END
$$;

-- INSERT INTO ts_measure (tools, ad-hoc loads): a row at a time, with the caller's rights and
-- app.tenant_id as the caller set it, so the policies check every row written as they check the
-- worker's. The first point of a device and instant makes its reading; later ones (other rows or
-- statements) are stored apart, in ts_point. A point already stored is skipped (and not counted),
-- as ON CONFLICT DO NOTHING would.
CREATE OR REPLACE FUNCTION ingest_measure_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    tenant_of_row integer;
    device_of_row bigint;
    series_of_row bigint;
    added bigint;
BEGIN
    INSERT INTO ts_tenant (tenant_id) VALUES (NEW.tenant_id) ON CONFLICT DO NOTHING;
    SELECT t.tenant_no INTO tenant_of_row FROM ts_tenant t WHERE t.tenant_id = NEW.tenant_id;
    INSERT INTO ts_device (tenant_no, tenant_id, device_id) VALUES (tenant_of_row, NEW.tenant_id, NEW.device_id)
    ON CONFLICT DO NOTHING;
    SELECT d.device_no INTO device_of_row FROM ts_device d
    WHERE d.tenant_id = NEW.tenant_id AND d.device_id = NEW.device_id;
    INSERT INTO ts_series (tenant_no, tenant_id, device_id, point_id, device_no)
    VALUES (tenant_of_row, NEW.tenant_id, NEW.device_id, NEW.point_id, device_of_row)
    ON CONFLICT DO NOTHING;
    SELECT s.series_id INTO series_of_row FROM ts_series s
    WHERE s.tenant_id = NEW.tenant_id AND s.device_id = NEW.device_id AND s.point_id = NEW.point_id;
    INSERT INTO ts_reading (tenant_no, device_no, ts, series, v_num, v_bool, v_text, unit, meta, ingested_at)
    VALUES (tenant_of_row, device_of_row, NEW.ts, ARRAY[series_of_row], ARRAY[NEW.v_num], ARRAY[NEW.v_bool], ARRAY[NEW.v_text],
            ARRAY[NEW.unit], NEW.meta, coalesce(NEW.ingested_at, now()))
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS added = ROW_COUNT;
    IF added = 0 AND NOT EXISTS (
        SELECT FROM ts_reading r
        WHERE r.device_no = device_of_row AND r.ts = NEW.ts AND r.tenant_no = tenant_of_row AND series_of_row = ANY (r.series)
    ) THEN
        INSERT INTO ts_point (tenant_no, series_id, ts, v_num, v_bool, v_text, unit, meta, ingested_at)
        VALUES (tenant_of_row, series_of_row, NEW.ts, NEW.v_num, NEW.v_bool, NEW.v_text, NEW.unit, NEW.meta,
                coalesce(NEW.ingested_at, now()))
        ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS added = ROW_COUNT;
    END IF;
    RETURN CASE WHEN added > 0 THEN NEW END;
END
$$;

-- 0011's purge, on both tables: a reading's points stored apart go first (ts_point), so a
-- reading never leaves points behind it that a redelivery could store a second time.
CREATE OR REPLACE FUNCTION ingest_purge_telemetry(older_than_days integer, batch_size integer,
                                                  OUT chunks_dropped integer, OUT rows_deleted integer)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '10s'
AS $$
DECLARE
    cutoff timestamptz;
    deleted integer;
    dropped integer;
    statement text;
    hypertable text;
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
        FOREACH hypertable IN ARRAY ARRAY['public.ts_point', 'public.ts_reading'] LOOP
            SELECT format('SELECT count(*) FROM %s.drop_chunks(%L, older_than => $1)',
                          extnamespace::regnamespace::text, hypertable) INTO statement
            FROM pg_extension WHERE extname = 'timescaledb';
            EXECUTE statement INTO dropped USING cutoff;
            chunks_dropped := chunks_dropped + dropped;
        END LOOP;
    ELSE
        DELETE FROM public.ts_point WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM public.ts_point WHERE ts < cutoff LIMIT batch_size));
        GET DIAGNOSTICS rows_deleted = ROW_COUNT;
        IF rows_deleted < batch_size THEN
            DELETE FROM public.ts_reading WHERE ctid = ANY(ARRAY(
                SELECT ctid FROM public.ts_reading WHERE ts < cutoff LIMIT batch_size - rows_deleted));
            GET DIAGNOSTICS deleted = ROW_COUNT;
            rows_deleted := rows_deleted + deleted;
        END IF;
    END IF;
    IF rows_deleted < batch_size THEN
        DELETE FROM public.device_event WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM public.device_event WHERE ts < cutoff LIMIT batch_size - rows_deleted));
        GET DIAGNOSTICS deleted = ROW_COUNT;
        rows_deleted := rows_deleted + deleted;
    END IF;
END
$$;

DROP FUNCTION ingest_insert_points(text[], integer[], bigint[], timestamptz[], float8[], boolean[], text[],
                                   text[], text[], boolean);
DROP FUNCTION ingest_series_ids(text[], text[], text[]);

-- Privileges: devices as a table, readings by column only (0007: column privileges do not reach
-- TimescaleDB's chunks).
GRANT SELECT ON ts_device TO tenant_reader, ingest_writer;
GRANT INSERT (tenant_no, tenant_id, device_id) ON ts_device TO ingest_writer;
GRANT INSERT (device_no) ON ts_series TO ingest_writer;
GRANT SELECT (tenant_no, device_no, ts, series, v_num, v_bool, v_text, unit, meta, ingested_at)
    ON ts_reading TO tenant_reader, ingest_writer;
GRANT INSERT (tenant_no, device_no, ts, series, v_num, v_bool, v_text, unit, meta, ingested_at)
    ON ts_reading TO ingest_writer;
GRANT EXECUTE ON FUNCTION ingest_series(text[], text[], text[]) TO ingest_writer;
GRANT EXECUTE ON FUNCTION ingest_insert_readings(text[], integer[], ingest_reading[], boolean) TO ingest_writer;

-- Any child of a table with row-level security: reached only through the parent (0007).
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
