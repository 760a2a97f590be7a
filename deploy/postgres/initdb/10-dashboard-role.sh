#!/bin/sh
# Run once by the postgres image on an empty data directory (/docker-entrypoint-initdb.d), as
# the database's owner: the login Grafana uses, with no rights of its own. messnetz grants it
# SELECT on what dashboards show at every start (store.dashboard_role in messnetz.toml).
# Elsewhere, run it once with psql's PG* variables pointing at the database.
set -eu
: "${GRAFANA_DB_PASSWORD:?set GRAFANA_DB_PASSWORD}"
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-messnetz}" --dbname "${POSTGRES_DB:-messnetz}" \
    -v pw="$GRAFANA_DB_PASSWORD" <<'SQL'
CREATE ROLE grafana_reader LOGIN PASSWORD :'pw';
SQL
