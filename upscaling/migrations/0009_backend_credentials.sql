-- Users' own backend credentials (upscaling/credentials.py): per owner and backend, the tokens of a backend whose
-- `auth.method` is `user_token_exchange` or `user_refresh_token`. Every token is Fernet ciphertext (key from
-- CREDENTIALS_KEY); nothing here is readable without the key.
CREATE TABLE backend_credentials (
    owner text NOT NULL,
    backend text NOT NULL,
    method text NOT NULL,
    access_token bytea,
    expires_at timestamptz,
    refresh_token bytea,
    registered_at timestamptz NOT NULL DEFAULT now(),
    refreshed_at timestamptz,
    PRIMARY KEY (owner, backend)
);
