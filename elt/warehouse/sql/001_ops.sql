-- Operational schema: the file ledger, row rejects and pipeline run records.
-- Idempotent: applied on every `elt` start-up and by the test fixtures.

create schema if not exists ops;
create schema if not exists raw;

create table if not exists ops.file_ledger (
    file_id          bigint generated always as identity primary key,
    bucket           text        not null,
    key              text        not null,
    etag             text,
    size_bytes       bigint,
    sha256           text,
    drop_type        text        not null,
    contract_version integer     not null,
    -- discovered -> loading -> loaded | rejected | quarantined | duplicate; loaded -> superseded
    status           text        not null default 'discovered'
        check (status in ('discovered', 'loading', 'loaded', 'rejected', 'quarantined', 'duplicate', 'superseded')),
    period_start     date,
    period_end       date,
    landed_at        timestamptz,
    rows_read        bigint,
    rows_loaded      bigint,
    rows_rejected    bigint,
    discovered_at    timestamptz not null default now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    error            text,
    archived_key     text,
    duplicate_of     bigint references ops.file_ledger (file_id),
    superseded_by    bigint references ops.file_ledger (file_id)
);

-- One ledger row per object version (same key, same ETag).
create unique index if not exists file_ledger_object_uq on ops.file_ledger (bucket, key, etag);
-- At most one loaded file per content per drop type: the same bytes are never loaded twice.
create unique index if not exists file_ledger_loaded_sha_uq
    on ops.file_ledger (drop_type, sha256) where status = 'loaded';
create index if not exists file_ledger_status_idx on ops.file_ledger (drop_type, status);
-- Seconds per load phase (copy, validate, commit, move), for operators and benchmarks.
alter table ops.file_ledger add column if not exists timings jsonb;
-- The text encoding the file was read in: UTF8 or WIN1252 (spreadsheet exports on Windows).
alter table ops.file_ledger add column if not exists encoding text;
-- The sender layout the header was recognised as (contracts with several layouts, e.g. claims payers).
alter table ops.file_ledger add column if not exists layout text;

create table if not exists ops.load_rejects (
    reject_id   bigint generated always as identity primary key,
    file_id     bigint not null references ops.file_ledger (file_id),
    row_number  bigint not null,
    column_name text,
    rule        text   not null,
    message     text   not null,
    -- May hold personal data: readable only by privileged roles, never written to logs.
    raw_value   text
);
create index if not exists load_rejects_file_idx on ops.load_rejects (file_id, row_number);

create table if not exists ops.pipeline_runs (
    run_id       text        not null,
    dag_id       text        not null,
    -- running (loads recorded, dbt to come), success, failed
    state        text        not null,
    started_at   timestamptz not null default now(),
    finished_at  timestamptz,
    files_loaded integer,
    detail       text,
    failed_tasks text[]      not null default '{}',
    primary key (dag_id, run_id)
);
-- Before 2026-11-25 a run was keyed by run_id alone, which repeats across DAGs (scheduled__<date>).
alter table ops.pipeline_runs add column if not exists failed_tasks text[] not null default '{}';
do $$
begin
    if exists (select 1 from pg_constraint where conrelid = 'ops.pipeline_runs'::regclass
               and contype = 'p' and cardinality(conkey) = 1) then
        alter table ops.pipeline_runs drop constraint pipeline_runs_pkey;
        alter table ops.pipeline_runs add primary key (dag_id, run_id);
    end if;
end $$;

-- When the file's publisher issued it, for drops that say so inside the file (a KH03 workbook's Revised: or
-- Published: date): of two files for one period, the later publication is the current one, whatever order
-- they arrive in.
alter table ops.file_ledger add column if not exists published_on date;

-- Connector runs (elt/connectors/engine.py, issue 16): one row per attempt at a delivery out of the warehouse or a
-- pull into it. A delivery's run_key is '<connector>-<as_of>': a succeeded row for it means the delivery is made, and
-- a later run of the same run_key is `skipped` (sends nothing). `error` names the step and the cause, never a row value.
create table if not exists ops.connector_runs (
    run_id        bigint generated always as identity primary key,
    connector     text        not null,
    direction     text        not null check (direction in ('deliver', 'pull')),
    run_key       text        not null,
    -- schedule: its DAG's scheduled run; manual: triggered in Airflow; cli: `elt connectors run`
    trigger       text        not null check (trigger in ('schedule', 'manual', 'cli')),
    status        text        not null default 'running'
        check (status in ('running', 'succeeded', 'failed', 'skipped')),
    started_at    timestamptz not null default now(),
    finished_at   timestamptz,
    rows          bigint,
    bytes         bigint,
    sha256        text,
    location      text,
    -- the delivered mart's build time (max(built_at)), and the ledger ids of the files it was built from (as the
    -- API's meta.sources finds them)
    as_of         timestamptz,
    source_files  bigint[]    not null default '{}',
    cursor_before text,
    cursor_after  text,
    dry_run       boolean     not null default false,
    full_reload   boolean     not null default false,
    error         text,
    detail        jsonb       not null default '{}'
);
create index if not exists connector_runs_connector_idx on ops.connector_runs (connector, run_id);
create index if not exists connector_runs_delivered_idx on ops.connector_runs (connector, run_key)
    where status = 'succeeded';
