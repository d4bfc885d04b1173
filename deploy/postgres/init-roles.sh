#!/bin/sh
# First start of the postgres container: Lyss's roles and database (see docs/architecture.md, Tenancy).
# The owner runs migrations; the app role is what the service logs in as; lookup owns SECURITY DEFINER
# functions and cannot log in. None is a superuser, none bypasses row-level security.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v owner_password="$LYSS_OWNER_PASSWORD" -v app_password="$LYSS_APP_PASSWORD" <<'SQL'
CREATE ROLE lyss_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD :'owner_password';
CREATE ROLE lyss_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD :'app_password';
CREATE ROLE lyss_lookup NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
GRANT lyss_lookup TO lyss_owner;
CREATE DATABASE lyss_db OWNER lyss_owner;
\connect lyss_db
REVOKE ALL ON DATABASE lyss_db FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE lyss_db TO lyss_app;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO lyss_app;
GRANT USAGE, CREATE ON SCHEMA public TO lyss_lookup;
CREATE EXTENSION IF NOT EXISTS vector;
SQL
