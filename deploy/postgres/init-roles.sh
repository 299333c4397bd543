#!/bin/sh
# The TrakSense login roles, made by PostgreSQL's superuser at the database's first start.
#
# docker-compose.yml mounts this into /docker-entrypoint-initdb.d/, which the image runs once, on
# an empty data directory, after creating POSTGRES_DB (with TimescaleDB in it). The superuser does
# only this; no process of the deployment logs in as it afterwards:
#   traksense_owner   owns the database and its schema; `python -m migrations` logs in as it
#   traksense_worker  a member of ingest_writer only (row-level security, no DDL): the workers
#   traksense_dlq     a member of dlq_operator only (migration 0008): `python -m ingest_tasks.dlq`
# Passwords come from TRAKSENSE_OWNER_PASSWORD, TRAKSENSE_WORKER_PASSWORD and
# TRAKSENSE_DLQ_PASSWORD (read with \getenv, so they never appear in a command line). Running it
# again is harmless: missing roles are made, existing ones get these attributes and passwords.
# Run by hand on a database migrated before these roles existed, it hands its objects to the owner:
#   docker compose exec db /docker-entrypoint-initdb.d/100_traksense_roles.sh
set -eu

for name in POSTGRES_DB TRAKSENSE_OWNER_PASSWORD TRAKSENSE_WORKER_PASSWORD TRAKSENSE_DLQ_PASSWORD; do
    eval "value=\${$name:-}"
    if [ -z "$value" ]; then
        echo "init-roles: $name is not set: set it (see docs/security.md)" >&2
        exit 1
    fi
done

psql -v ON_ERROR_STOP=1 -q --username "${POSTGRES_USER:-postgres}" --dbname "$POSTGRES_DB" <<'SQL'
\getenv owner_password TRAKSENSE_OWNER_PASSWORD
\getenv worker_password TRAKSENSE_WORKER_PASSWORD
\getenv dlq_password TRAKSENSE_DLQ_PASSWORD
\getenv dbname POSTGRES_DB

-- TimescaleDB, where it is preloaded (the timescale image has made it already): only a superuser
-- may create it, and migration 0003 makes ts_measure a hypertable when it is there.
SELECT 'CREATE EXTENSION IF NOT EXISTS timescaledb'
WHERE EXISTS (SELECT FROM pg_available_extensions WHERE name = 'timescaledb')
  AND current_setting('shared_preload_libraries') LIKE '%timescaledb%' \gexec

-- The migrations would make the group roles too, but the logins below must join them first.
SELECT format('CREATE ROLE %I NOLOGIN', r) FROM unnest(ARRAY['tenant_reader', 'ingest_writer']) r
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) \gexec
SELECT 'CREATE ROLE dlq_operator NOLOGIN NOINHERIT'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dlq_operator') \gexec
SELECT format('CREATE ROLE %I', r)
FROM unnest(ARRAY['traksense_owner', 'traksense_worker', 'traksense_dlq']) r
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) \gexec

ALTER ROLE traksense_owner LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'owner_password';
ALTER ROLE traksense_worker LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'worker_password';
ALTER ROLE traksense_dlq LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'dlq_password';

-- The migrations grant ingest_writer to their own role (0002) and to dlq_operator (0008).
GRANT ingest_writer TO traksense_owner WITH ADMIN OPTION;
GRANT ingest_writer TO traksense_worker;
GRANT dlq_operator TO traksense_dlq;
-- Migration 0003 reads shared_preload_libraries to tell whether TimescaleDB is loaded.
GRANT pg_read_all_settings TO traksense_owner;

-- The owner of the database owns its public schema (PostgreSQL 15+: pg_database_owner), so the
-- migrations can create tables there; nobody else may (the REVOKE matters before 15 only).
ALTER DATABASE :"dbname" OWNER TO traksense_owner;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON DATABASE :"dbname" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"dbname" TO traksense_worker, traksense_dlq;
-- The writer stages a chunk's measurements in a temporary table (ingest_tasks/store.py).
GRANT TEMPORARY ON DATABASE :"dbname" TO ingest_writer;

-- A database migrated before these roles existed (as the superuser: `make run`, or the compose
-- stack before issue 12) has its objects owned by the superuser: hand them to the owner, so the
-- migrations can run as it. Nothing to do at a first start. Extension objects stay as they are;
-- sequences of a column and a hypertable's chunks follow their table.
SELECT format('ALTER TABLE %s OWNER TO traksense_owner', c.oid::regclass)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
  AND c.relowner <> 'traksense_owner'::regrole
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
\gexec
SELECT format('ALTER FUNCTION %s OWNER TO traksense_owner', p.oid::regprocedure)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public' AND p.proowner <> 'traksense_owner'::regrole
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
\gexec
SQL
echo "init-roles: login roles traksense_owner, traksense_worker, traksense_dlq ready in $POSTGRES_DB"
