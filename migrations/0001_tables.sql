-- The contract's four tables and the uniqueness that makes every write idempotent.

CREATE TABLE ts_measure (
    tenant_id   text NOT NULL,
    device_id   text NOT NULL,
    point_id    text NOT NULL,
    ts          timestamptz NOT NULL,
    v_num       double precision,
    v_bool      boolean,
    v_text      text,
    unit        text,
    meta        jsonb,
    ingested_at timestamptz NOT NULL DEFAULT now()
);
-- One row per point and instant; also the index for tenant -> device -> point -> time queries.
CREATE UNIQUE INDEX ts_measure_key ON ts_measure (tenant_id, device_id, point_id, ts);

CREATE TABLE cmd_ack (
    tenant_id   text NOT NULL,
    device_id   text NOT NULL,
    cmd_id      text NOT NULL,
    ok          boolean NOT NULL,
    ts_exec     timestamptz,
    err         text,
    payload     jsonb,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, device_id, cmd_id)
);

CREATE TABLE device_event (
    tenant_id   text NOT NULL,
    device_id   text NOT NULL,
    ts          timestamptz NOT NULL,
    type        text NOT NULL,
    severity    text NOT NULL DEFAULT 'info' CHECK (severity IN ('info', 'warning', 'critical')),
    data        jsonb,
    ingested_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX device_event_key ON device_event (tenant_id, device_id, ts, type);

CREATE TABLE ingest_errors (
    id        bigserial PRIMARY KEY,
    tenant_id text,
    topic     text NOT NULL,
    payload   bytea NOT NULL,
    reason    text NOT NULL CHECK (reason IN ('invalid_json', 'validation_error', 'unknown_schema',
              'payload_too_large', 'invalid_topic', 'db_rejected', 'retries_exhausted')),
    detail    text,
    ts        timestamptz NOT NULL DEFAULT now(),
    -- Where the message stood in the chunk that carried it: a retried or redelivered chunk
    -- finds its dead letters already there and adds none.
    chunk_id  text,
    chunk_seq integer
);
CREATE UNIQUE INDEX ingest_errors_chunk_key ON ingest_errors (chunk_id, chunk_seq);
CREATE INDEX ingest_errors_ts ON ingest_errors (ts);
CREATE INDEX ingest_errors_tenant_reason ON ingest_errors (tenant_id, reason, ts);
