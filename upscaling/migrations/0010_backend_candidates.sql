-- Several backends per task (issue 14): the candidate backends of a unit job (canonical endpoints, in the order
-- the task named them), resolved from its `service.endpoint` (one URL, a list, or a group name) when the job was
-- created. NULL: the one backend of `service.endpoint` (jobs stored before, and single-backend jobs). The
-- dispatcher picks one of them when it leases the job and writes it to `unit_jobs.backend` (where it ran).
ALTER TABLE unit_jobs ADD COLUMN candidates text[];
