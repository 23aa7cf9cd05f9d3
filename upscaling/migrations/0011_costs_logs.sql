-- Costs, usage and error logs (issue 14). A task sums what backends report of its jobs (`costs`, and `usage` per
-- metric: {"cpu": {"value", "unit"}, ...}), kept on the task row by upscaling/jobs/store.py in the transaction that
-- records a job's report, so money spent on an attempt that was resubmitted stays counted. `max_costs`: no new
-- job is submitted once `costs` reaches it, and `stop_reason` says why the task stopped submitting.
ALTER TABLE upscale_tasks
    ADD COLUMN costs        double precision NOT NULL DEFAULT 0,
    ADD COLUMN usage        jsonb,
    ADD COLUMN max_costs    double precision,
    ADD COLUMN stop_reason  text,
    ADD CONSTRAINT upscale_tasks_max_costs_check CHECK (max_costs IS NULL OR max_costs > 0);

-- The error-level log entries of a failed backend job, fetched once per failure (one row per unit job and backend
-- job) by the monitor; `entries` is the backend's list of log entries (openEO: id, level, message, time, code, ...).
CREATE TABLE job_logs (
    job_id          bigint      NOT NULL REFERENCES unit_jobs (id) ON DELETE CASCADE,
    backend_job_id  text        NOT NULL,
    attempt         integer     NOT NULL DEFAULT 1,
    entries         jsonb       NOT NULL DEFAULT '[]'::jsonb,
    fetched         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, backend_job_id)
);
