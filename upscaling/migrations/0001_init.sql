-- Upscale tasks and their unit jobs (one openEO batch job per dimension value).
CREATE TABLE upscale_tasks (
    id              bigserial PRIMARY KEY,
    owner           text        NOT NULL DEFAULT 'anonymous',
    title           text        NOT NULL,
    label           text        NOT NULL,
    status          text        NOT NULL DEFAULT 'created',
    service         jsonb       NOT NULL,
    parameters      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    format          text        NOT NULL DEFAULT 'gtiff',
    dimension_name  text        NOT NULL,
    correlation_id  text,
    created         timestamptz NOT NULL DEFAULT now(),
    updated         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT upscale_tasks_status_check
        CHECK (status IN ('created', 'queued', 'running', 'finished', 'canceled', 'failed'))
);
CREATE INDEX upscale_tasks_owner_status_idx ON upscale_tasks (owner, status, id);

CREATE TABLE unit_jobs (
    id              bigserial PRIMARY KEY,
    task_id         bigint      REFERENCES upscale_tasks (id) ON DELETE CASCADE,
    owner           text        NOT NULL DEFAULT 'anonymous',
    seq             integer     NOT NULL DEFAULT 1,
    title           text        NOT NULL,
    label           text        NOT NULL,
    status          text        NOT NULL DEFAULT 'created',
    service         jsonb       NOT NULL,
    parameters      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    format          text        NOT NULL DEFAULT 'gtiff',
    tag             text        NOT NULL UNIQUE,
    backend_job_id  text,
    progress        double precision,
    message         text,
    created         timestamptz NOT NULL DEFAULT now(),
    updated         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT unit_jobs_status_check
        CHECK (status IN ('created', 'queued', 'running', 'finished', 'canceled', 'failed', 'unknown'))
);
CREATE INDEX unit_jobs_task_idx ON unit_jobs (task_id, id);
CREATE INDEX unit_jobs_active_idx ON unit_jobs (status) WHERE status IN ('created', 'queued', 'running');
