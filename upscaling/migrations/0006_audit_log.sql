-- The audit trail (gateway/audit.py): who created, cancelled or retried what, and which resources of other users
-- an administrator read; with time, correlation id and outcome. Rows are only ever inserted.
CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    admin boolean NOT NULL DEFAULT false,
    action text NOT NULL,
    resource text NOT NULL,
    resource_id bigint,
    owner text,
    outcome text NOT NULL,
    detail text NOT NULL DEFAULT '',
    correlation_id text NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, id);
CREATE INDEX audit_log_resource_idx ON audit_log (resource, resource_id, id);
