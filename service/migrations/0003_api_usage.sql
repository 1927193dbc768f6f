-- Version 3: what the API clients share across processes (the web shows what the worker did).

-- Calls made to Pipedrive and Brevo, counted per hour by API, method, path template and status.
CREATE TABLE api_calls (
    id INTEGER PRIMARY KEY,
    api TEXT NOT NULL CHECK (api IN ('pipedrive', 'brevo')),
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status INTEGER NOT NULL,
    hour INTEGER NOT NULL,
    calls INTEGER NOT NULL DEFAULT 0
);
-- One counter per API operation, status and hour, bumped in place.
CREATE UNIQUE INDEX idx_api_calls_key ON api_calls(api, method, path, status, hour);
-- The status page sums the calls of the last hour.
CREATE INDEX idx_api_calls_hour ON api_calls(hour);

-- The last rate-limit figures each API reported in its response headers.
CREATE TABLE api_rate_limits (
    api TEXT PRIMARY KEY CHECK (api IN ('pipedrive', 'brevo')),
    "limit" INTEGER,
    remaining INTEGER,
    reset_seconds REAL,
    daily_limit INTEGER,
    daily_remaining INTEGER,
    observed_at REAL NOT NULL
);

-- Request pacing shared by every process: a call in a bucket waits until next_at, then moves it on.
CREATE TABLE api_pacing (
    bucket TEXT PRIMARY KEY,
    next_at REAL NOT NULL
);
