-- Runs once, when the postgres container initialises an empty data volume (docker-entrypoint-initdb.d).
-- POSTGRES_DB creates `warehouse`; Airflow's metadata lives beside it in its own database, as in
-- ./start.sh's embedded Postgres. To re-run it, remove the volume: docker compose down -v.
create database airflow;
