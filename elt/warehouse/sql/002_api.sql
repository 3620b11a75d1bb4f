-- The API's keys and its audit trail of patient-level reads (backend/auth.py).
-- Idempotent: applied on every `elt` start-up and by the test fixtures.

create table if not exists ops.api_keys (
    key_id      bigint generated always as identity primary key,
    name        text        not null,
    -- analyst: de-identified marts; clinician: those and the patient-level endpoints; admin: everything
    role        text        not null check (role in ('analyst', 'clinician', 'admin')),
    -- sha256 of the whole key: the key itself is shown once, when it is created, and never stored
    key_hash    text        not null,
    created_at  timestamptz not null default now(),
    revoked_at  timestamptz
);

create table if not exists ops.api_audit (
    audit_id    bigint generated always as identity primary key,
    at          timestamptz not null default now(),
    -- the key that read: keys are revoked, never deleted (api_keys_never_deleted below), so no foreign key is needed
    -- to keep it naming one, and none is checked on every insert (that check locks the key's row: under concurrent
    -- reads by one key, a MultiXact per read)
    key_id      bigint      not null,
    role        text        not null,
    method      text        not null,
    endpoint    text        not null,
    -- the query parameters as sent (filters may name a patient: readable by the owner only)
    params      jsonb       not null,
    remote_addr text
);
create index if not exists api_audit_key_at_idx on ops.api_audit (key_id, at);
alter table ops.api_audit drop constraint if exists api_audit_key_id_fkey;  -- made by an earlier version
-- A connector run that moves patient-level data is audited here too (elt/warehouse/audit.py): no key (null), role
-- 'connector', endpoint 'connector:<name>'.
alter table ops.api_audit alter column key_id drop not null;

-- An API key is revoked (`api-key revoke`), never deleted: the audit trail and the runs go on naming it.
create or replace function ops.refuse_key_delete() returns trigger language plpgsql as $$
begin
    raise exception 'API keys are revoked, never deleted: the audit trail names them (./start.sh api-key revoke KEY_ID)';
end $$;
create or replace trigger api_keys_never_deleted before delete or truncate on ops.api_keys
    for each statement execute function ops.refuse_key_delete();

-- The ingest runs the API started for a drop, and which key started each: GET /api/v1/runs/<run_id> shows a run
-- (and its file's ledger row) to that key and to admins only. Written before the run is asked of Airflow.
create table if not exists ops.api_runs (
    dag_id      text        not null,
    run_id      text        not null,
    key_id      bigint      not null references ops.api_keys (key_id),
    object_key  text        not null,
    file_id     bigint,
    created_at  timestamptz not null default now(),
    primary key (dag_id, run_id)
);
create index if not exists api_runs_run_id_idx on ops.api_runs (run_id);
