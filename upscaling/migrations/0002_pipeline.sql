-- The upscaling pipeline: job submission state, the outbox of job messages, the per-task event log
-- (WatchTask resume), and per-backend rate state shared by dispatcher replicas.
ALTER TABLE upscale_tasks
    ADD COLUMN process_id        text,
    ADD COLUMN job_count         integer NOT NULL DEFAULT 0,
    ADD COLUMN last_sequence     bigint  NOT NULL DEFAULT 0,
    ADD COLUMN cancel_requested  boolean NOT NULL DEFAULT false,
    ADD COLUMN max_attempts      integer NOT NULL DEFAULT 1;

ALTER TABLE unit_jobs
    ADD COLUMN backend           text,
    ADD COLUMN process_id        text,
    ADD COLUMN submit_arguments  jsonb,
    ADD COLUMN attempts          integer NOT NULL DEFAULT 0,
    ADD COLUMN submitted_at      timestamptz,
    ADD COLUMN finished_at       timestamptz,
    ADD COLUMN usage             jsonb,
    ADD COLUMN costs             double precision,
    ADD COLUMN results           jsonb,
    ADD COLUMN checked_at        timestamptz,
    ADD COLUMN cancel_requested  boolean NOT NULL DEFAULT false;
CREATE INDEX unit_jobs_backend_active_idx ON unit_jobs (backend, status)
    WHERE status IN ('queued', 'running');
CREATE UNIQUE INDEX unit_jobs_backend_job_idx ON unit_jobs (backend, backend_job_id)
    WHERE backend_job_id IS NOT NULL;

-- Job messages written in the same transaction as their jobs; the relay publishes them with publisher
-- confirms and sets sent_at only once the broker confirmed.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    job_id       bigint      NOT NULL REFERENCES unit_jobs (id) ON DELETE CASCADE,
    routing_key  text        NOT NULL,
    payload      bytea       NOT NULL,
    created      timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz
);
CREATE INDEX outbox_pending_idx ON outbox (id) WHERE sent_at IS NULL;

-- Every status event of a task, numbered per task; payload is a serialized upscaling.v1.WatchTaskResponse.
CREATE TABLE task_events (
    task_id   bigint      NOT NULL REFERENCES upscale_tasks (id) ON DELETE CASCADE,
    sequence  bigint      NOT NULL,
    job_id    bigint,
    payload   bytea       NOT NULL,
    created   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, sequence)
);

-- Start-rate state per backend, shared by all dispatcher replicas (row-locked when a start is reserved).
CREATE TABLE backend_state (
    backend        text PRIMARY KEY,
    next_start_at  timestamptz NOT NULL DEFAULT now()
);
