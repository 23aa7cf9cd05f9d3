-- Least privilege (upscaling/accounts.py): the services run under roles with grants on the tables they use only,
-- given by `python -m upscaling.accounts` after the migrations (it applies them first, as the owner). No role but
-- the owner creates objects in the schema (PostgreSQL 15 and later revoke this from PUBLIC already; older servers
-- do not). A migration user that owns neither the schema nor the database leaves the setting as it is.
DO $$
BEGIN
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'not the owner of schema public: CREATE stays as it is';
END
$$;
