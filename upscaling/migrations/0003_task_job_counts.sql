-- Jobs per status, kept on the task row by jobstore (NULL = not known yet: recounted at the next change), so a
-- status change of one job does not recount every job of a large task.
ALTER TABLE upscale_tasks ADD COLUMN job_counts jsonb;
