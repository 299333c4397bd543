-- 0008's owner_rows policy on ingest_errors applied to every role: harmless (it matches only the
-- table's owner), but PostgreSQL ORs every permissive policy into each tenant's query, which can
-- cost a reader its index scan. Like 0009's policies, it now applies to the database's owner only
-- (compose's traksense_owner owns both the database and the tables: deploy/postgres/init-roles.sh).
ALTER POLICY owner_rows ON ingest_errors TO pg_database_owner;
