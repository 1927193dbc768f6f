-- Version 1: the four tables of the specification, exactly.
CREATE TABLE "user" (
    id TEXT PRIMARY KEY
);

CREATE TABLE "session" (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES "user"(id),
    expires_at INTEGER NOT NULL
);

CREATE TABLE filters (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    brevo_list_id INTEGER,
    deleted_at INTEGER
);

CREATE TABLE sync_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    filter_id INTEGER NOT NULL REFERENCES filters(id) ON DELETE CASCADE,
    status TEXT NOT NULL CHECK (status IN ('processing', 'completed', 'failed')),
    created_at INTEGER NOT NULL DEFAULT (unixepoch()),
    completed_at INTEGER,
    total_fetched INTEGER DEFAULT 0,
    total_added INTEGER DEFAULT 0,
    error_message TEXT
);

CREATE INDEX idx_session_user_id ON "session"(user_id);
CREATE INDEX idx_session_expires_at ON "session"(expires_at);
CREATE INDEX idx_sync_jobs_filter_id ON sync_jobs(filter_id);
CREATE INDEX idx_sync_jobs_status ON sync_jobs(status);
CREATE INDEX idx_sync_jobs_created_at ON sync_jobs(created_at);
CREATE INDEX idx_filters_deleted_at ON filters(deleted_at);
