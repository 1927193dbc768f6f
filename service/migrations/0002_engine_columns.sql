-- Version 2: what the admin sessions, the worker loop and the sync engine need beyond the
-- specified tables. Additions only: every new column is nullable or defaulted.

-- argon2id hash of the admin password the sessions were issued under; a change ends them all.
ALTER TABLE "user" ADD COLUMN password_hash TEXT;

-- 'people' or 'deals': which Pipedrive filter type this is (NULL until the next refresh).
ALTER TABLE filters ADD COLUMN type TEXT CHECK (type IN ('people', 'deals'));

-- What the job does: a full resync, an incremental webhook sync, or a dry run.
ALTER TABLE sync_jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'full'
    CHECK (kind IN ('full', 'incremental', 'dry_run'));
-- Why the job exists.
ALTER TABLE sync_jobs ADD COLUMN "trigger" TEXT NOT NULL DEFAULT 'admin'
    CHECK ("trigger" IN ('admin', 'webhook', 'schedule', 'filter_changed', 'recovery'));
-- 1 when the admin forced the job past the safety brake.
ALTER TABLE sync_jobs ADD COLUMN forced INTEGER NOT NULL DEFAULT 0 CHECK (forced IN (0, 1));
-- Contacts whose attributes or email were changed.
ALTER TABLE sync_jobs ADD COLUMN total_updated INTEGER DEFAULT 0;
-- Contacts taken out of the list.
ALTER TABLE sync_jobs ADD COLUMN total_removed INTEGER DEFAULT 0;
-- Members without a valid email, or whose email Brevo rejected.
ALTER TABLE sync_jobs ADD COLUMN total_skipped INTEGER DEFAULT 0;
-- When a worker claimed the job; NULL while it waits in the queue.
ALTER TABLE sync_jobs ADD COLUMN claimed_at INTEGER;
-- Random token of the claiming worker; every later write checks it so a dead worker cannot overwrite.
ALTER TABLE sync_jobs ADD COLUMN claim_token TEXT;
-- Last heartbeat of the claiming worker; a stale one frees the filter.
ALTER TABLE sync_jobs ADD COLUMN heartbeat_at INTEGER;

-- A filter holds at most one processing job: the row is the lock. Older duplicates, which
-- version 1 could not prevent, are failed first so the index can be built.
UPDATE sync_jobs SET status = 'failed', completed_at = unixepoch(),
    error_message = 'superseded by a newer job during the schema upgrade'
WHERE status = 'processing'
  AND id NOT IN (SELECT MAX(id) FROM sync_jobs WHERE status = 'processing' GROUP BY filter_id);
CREATE UNIQUE INDEX idx_sync_jobs_one_processing ON sync_jobs(filter_id) WHERE status = 'processing';

-- Failed admin logins per client address, for throttling that holds across web processes.
CREATE TABLE login_failures (
    id INTEGER PRIMARY KEY,
    client TEXT NOT NULL,
    failed_at INTEGER NOT NULL
);
-- Throttling counts one client's recent failures.
CREATE INDEX idx_login_failures_client_failed_at ON login_failures(client, failed_at);

-- Periodic duties of the worker loop: whoever moves next_run_at forward runs the duty, once across workers.
CREATE TABLE periodic_duties (
    name TEXT PRIMARY KEY,
    next_run_at INTEGER NOT NULL,
    last_run_at INTEGER,
    last_run_by TEXT
);
