-- Version 8: pausing work against an API that refused the service's credential (401 or 403). Additions only.

-- Fingerprint (a short hash, never the credential) of the credential the API refused; NULL when none is paused.
ALTER TABLE api_rate_limits ADD COLUMN auth_fingerprint TEXT;
-- The status the API refused it with (401 or 403).
ALTER TABLE api_rate_limits ADD COLUMN auth_status INTEGER;
-- The refusal as the job that met it reported it (API, operation, the API's message; no secret).
ALTER TABLE api_rate_limits ADD COLUMN auth_error TEXT;
-- When the API first refused the credential (unix seconds).
ALTER TABLE api_rate_limits ADD COLUMN auth_refused_at REAL;
-- The current wait between two tries of the refused credential; doubles after each refused try.
ALTER TABLE api_rate_limits ADD COLUMN auth_backoff_seconds REAL;
-- Until when no work uses the refused credential (unix seconds); then one job tries it again.
ALTER TABLE api_rate_limits ADD COLUMN auth_paused_until REAL;
