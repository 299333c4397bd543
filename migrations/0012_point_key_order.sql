-- ts_point's indexes: its key compares series_id first, and on TimescaleDB it has no other.
--
-- The key is (series_id, ts, tenant_no) instead of (tenant_no, series_id, ts). Why: every stored
-- point searches this index from its root, a few dozen key comparisons, and within one tenant's
-- INSERT the leading tenant_no is always equal, so each comparison read two columns to decide
-- (_bt_compare was a sixth of PostgreSQL's CPU per point). A series id belongs to one tenant:
-- compared first, it decides almost every comparison alone. tenant_no stays in the key, so a
-- point a writer files under another tenant's series still collides with nothing of that
-- tenant's (0011); a reader's query finds its points by (series_id, ts), tenant_no checked in
-- the index.
--
-- create_hypertable (0011) gave ts_point, and each chunk, a second index, on ts alone: a second
-- index insert for every stored point. Nothing needs it: a tenant's queries go through a series
-- (the key), the purge drops whole chunks by their time range, and a query over every series of
-- a time range reads only the chunks of that range.
--
-- Both indexes are rebuilt or dropped on every chunk on TimescaleDB; on an upgraded database the
-- key's rebuild takes about as long as building it once.

DROP INDEX ts_point_key;
CREATE UNIQUE INDEX ts_point_key ON ts_point (series_id, ts, tenant_no);
DROP INDEX IF EXISTS ts_point_ts_idx;
