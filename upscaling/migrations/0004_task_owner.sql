-- Tenant isolation: every task and unit job belongs to the user who created it (`owner`, a user id of the
-- configured authentication; 'anonymous' with AUTH_MODE=none and for every row stored before). The columns exist
-- since 0001; this makes sure no row lacks an owner, keeps a task's jobs owned by the task's owner, and adds the
-- indexes the owner-scoped reads use (a user's tasks newest first; a user's standalone jobs).
UPDATE upscale_tasks SET owner = 'anonymous' WHERE owner IS NULL OR owner = '';
UPDATE unit_jobs j SET owner = t.owner FROM upscale_tasks t WHERE j.task_id = t.id AND j.owner <> t.owner;
UPDATE unit_jobs SET owner = 'anonymous' WHERE owner IS NULL OR owner = '';
ALTER TABLE upscale_tasks ALTER COLUMN owner SET DEFAULT 'anonymous', ALTER COLUMN owner SET NOT NULL;
ALTER TABLE unit_jobs ALTER COLUMN owner SET DEFAULT 'anonymous', ALTER COLUMN owner SET NOT NULL;
CREATE INDEX upscale_tasks_owner_id_idx ON upscale_tasks (owner, id);
CREATE INDEX unit_jobs_owner_standalone_idx ON unit_jobs (owner, status, id) WHERE task_id IS NULL;
