-- The outbox carries status events as well as job messages (issue 12): the gateway publishes nothing to the
-- broker itself, and the relays run in the dispatchers and monitors. A row goes to the jobs exchange (a job
-- message, `job_id` set) or to the events exchange (a status event or a batch of them, `job_id` NULL, with the
-- AMQP type, correlation id and headers the watchers read).
ALTER TABLE outbox
    ALTER COLUMN job_id DROP NOT NULL,
    ADD COLUMN exchange        text  NOT NULL DEFAULT 'jobs',
    ADD COLUMN message_type    text  NOT NULL DEFAULT 'upscaling.v1.SubmitJobMessage',
    ADD COLUMN correlation_id  text,
    ADD COLUMN headers         jsonb,
    ADD CONSTRAINT outbox_exchange_check CHECK (exchange IN ('jobs', 'events')),
    ADD CONSTRAINT outbox_job_message_check CHECK (exchange <> 'jobs' OR job_id IS NOT NULL);
