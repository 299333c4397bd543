-- Row-level security: a session sees and writes only the rows of the tenant in app.tenant_id.
-- current_setting(..., true) is '' (not NULL) once a SET LOCAL has ended, hence NULLIF.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenant_reader') THEN
        CREATE ROLE tenant_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ingest_writer') THEN
        CREATE ROLE ingest_writer NOLOGIN;
    END IF;
END
$$;

ALTER TABLE ts_measure ENABLE ROW LEVEL SECURITY;
ALTER TABLE ts_measure FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON ts_measure
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

ALTER TABLE cmd_ack ENABLE ROW LEVEL SECURITY;
ALTER TABLE cmd_ack FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON cmd_ack
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

ALTER TABLE device_event ENABLE ROW LEVEL SECURITY;
ALTER TABLE device_event FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON device_event
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- Dead letters without a tenant (invalid topics) are for operators: no reader ever sees them.
-- The writer may add them, and see them (INSERT ... ON CONFLICT checks the new row against the
-- read policy too), only while no tenant is set.
ALTER TABLE ingest_errors ENABLE ROW LEVEL SECURITY;
ALTER TABLE ingest_errors FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON ingest_errors
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
CREATE POLICY untenanted_rows ON ingest_errors TO ingest_writer
    USING (tenant_id IS NULL AND NULLIF(current_setting('app.tenant_id', true), '') IS NULL)
    WITH CHECK (tenant_id IS NULL AND NULLIF(current_setting('app.tenant_id', true), '') IS NULL);

GRANT USAGE ON SCHEMA public TO tenant_reader, ingest_writer;
GRANT SELECT ON ts_measure, cmd_ack, device_event, ingest_errors TO tenant_reader;
GRANT SELECT, INSERT ON ts_measure, device_event, ingest_errors TO ingest_writer;
GRANT SELECT, INSERT, UPDATE ON cmd_ack TO ingest_writer;
GRANT USAGE ON SEQUENCE ingest_errors_id_seq TO ingest_writer;

-- The role in DATABASE_URL becomes the writer (SET ROLE) for every chunk it stores.
GRANT ingest_writer TO CURRENT_USER;
