-- A hypertable on ts where TimescaleDB is installed and preloaded; a plain table otherwise.
-- Compression stays off: TimescaleDB refuses it on tables with row-level security.

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_available_extensions WHERE name = 'timescaledb')
       AND current_setting('shared_preload_libraries') LIKE '%timescaledb%' THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        PERFORM create_hypertable('ts_measure', 'ts', chunk_time_interval => interval '1 day',
                                  if_not_exists => true, migrate_data => true);
        RAISE NOTICE 'ts_measure is a TimescaleDB hypertable';
    ELSE
        RAISE NOTICE 'TimescaleDB not available: ts_measure stays a plain table';
    END IF;
END
$$;
