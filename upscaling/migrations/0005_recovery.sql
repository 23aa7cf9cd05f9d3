-- Recovery of job messages (issue 10): the database is the truth, the queue a delivery mechanism.
-- Per unit job and submission (tag): how often handling its message failed for the same reason and how often it
-- was dead-lettered. Counted here, not by the broker's delivery count, so consumer deaths (which return every
-- prefetched message) never make a healthy job poison; a new tag (retry, resubmission) starts from zero.
CREATE TABLE job_delivery_state (
    job_id        bigint      PRIMARY KEY REFERENCES unit_jobs (id) ON DELETE CASCADE,
    tag           text        NOT NULL,
    failures      integer     NOT NULL DEFAULT 0,
    last_error    text,
    dead_letters  integer     NOT NULL DEFAULT 0,
    updated       timestamptz NOT NULL DEFAULT now()
);

-- Every dead letter and what was decided about it (republished, failed, dropped, obsolete), so no dead letter
-- is silent: the ones that name no job (undecodable, unknown job) are explained here.
CREATE TABLE dead_letters (
    id        bigserial   PRIMARY KEY,
    job_id    bigint,
    decision  text        NOT NULL,
    reason    text        NOT NULL,
    body      bytea,
    created   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_job_idx ON dead_letters (job_id);

-- Dispatchers say every few seconds which jobs' messages they hold, so the reconciler leaves those alone and
-- knows a dispatcher is gone when its row is no longer renewed.
CREATE TABLE dispatcher_heartbeats (
    consumer  text        PRIMARY KEY,
    seen_at   timestamptz NOT NULL DEFAULT now(),
    job_ids   bigint[]    NOT NULL DEFAULT '{}'
);

-- The reconciler asks when a job's message was last published.
CREATE INDEX outbox_job_idx ON outbox (job_id, id);
