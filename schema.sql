-- pipedrive-brevo-sync: the current database schema (version 8).
-- The single source of truth for a new database. service/migrations/ holds the numbered
-- steps that bring an older database here; tests prove both paths give the same schema.
-- Times are INTEGER unix seconds. unixepoch() needs SQLite 3.38 or later.

CREATE TABLE "user" (
    id TEXT PRIMARY KEY,                 -- a UUIDv4
    password_hash TEXT                   -- argon2id hash of the admin password the sessions were issued under; a change ends them all
);

CREATE TABLE "session" (
    id TEXT PRIMARY KEY,                 -- SHA-256 hex of the session token, never the token
    user_id TEXT NOT NULL REFERENCES "user"(id),
    expires_at INTEGER NOT NULL
);

CREATE TABLE filters (
    id INTEGER PRIMARY KEY,              -- the Pipedrive filter id
    name TEXT NOT NULL,
    brevo_list_id INTEGER,               -- NULL until the first sync creates the list
    deleted_at INTEGER,                  -- NULL while the filter exists upstream
    type TEXT CHECK (type IN ('people', 'deals')),  -- which Pipedrive filter type this is (NULL until the next refresh)
    update_time TEXT,                    -- Pipedrive's update_time of the filter at the last refresh; a change means it may have been edited
    conditions_hash TEXT,                -- SHA-256 of the filter's conditions when last seen; a change schedules a full resync
    related_objects TEXT                 -- the objects other than its own that the conditions name (e.g. "deal,organization"); NULL until read
);

CREATE TABLE sync_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    filter_id INTEGER NOT NULL REFERENCES filters(id) ON DELETE CASCADE,
    status TEXT NOT NULL CHECK (status IN ('processing', 'completed', 'failed')),
    created_at INTEGER NOT NULL DEFAULT (unixepoch()),
    completed_at INTEGER,
    total_fetched INTEGER DEFAULT 0,     -- entities (persons or deals) read from Pipedrive
    total_added INTEGER DEFAULT 0,       -- contacts newly put in the list
    error_message TEXT,
    kind TEXT NOT NULL DEFAULT 'full'    -- what the job does: a full resync, an incremental webhook sync, or a dry run
        CHECK (kind IN ('full', 'incremental', 'dry_run')),
    "trigger" TEXT NOT NULL DEFAULT 'admin'  -- why the job exists
        CHECK ("trigger" IN ('admin', 'webhook', 'schedule', 'filter_changed', 'recovery')),
    forced INTEGER NOT NULL DEFAULT 0 CHECK (forced IN (0, 1)),  -- 1 when the admin forced the job past the safety brake
    total_updated INTEGER DEFAULT 0,     -- contacts whose attributes or email were changed
    total_removed INTEGER DEFAULT 0,     -- contacts taken out of the list
    total_skipped INTEGER DEFAULT 0,     -- members without a valid email, or whose email Brevo rejected
    claimed_at INTEGER,                  -- when a worker claimed the job; NULL while it waits in the queue
    claim_token TEXT,                    -- random token of the claiming worker; every later write checks it so a dead worker cannot overwrite
    heartbeat_at INTEGER,                -- last heartbeat of the claiming worker; a stale one frees the filter
    note TEXT                            -- what the job noticed that the admin should know, such as a Brevo list it had to recreate
);

CREATE INDEX idx_session_user_id ON "session"(user_id);
CREATE INDEX idx_session_expires_at ON "session"(expires_at);
CREATE INDEX idx_sync_jobs_filter_id ON sync_jobs(filter_id);
CREATE INDEX idx_sync_jobs_status ON sync_jobs(status);
CREATE INDEX idx_sync_jobs_created_at ON sync_jobs(created_at);
CREATE INDEX idx_filters_deleted_at ON filters(deleted_at);
-- A filter holds at most one processing job: the row is the lock.
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
    observed_at REAL NOT NULL,
    paused_until REAL,                   -- until when Pipedrive work waits because the daily token budget is spent; NULL when not paused
    auth_fingerprint TEXT,               -- fingerprint (a short hash, never the credential) of the credential the API refused (401/403); NULL when none is paused
    auth_status INTEGER,                 -- the status it was refused with
    auth_error TEXT,                     -- the refusal as the job that met it reported it (no secret)
    auth_refused_at REAL,                -- when the API first refused the credential
    auth_backoff_seconds REAL,           -- the wait between two tries of the refused credential; doubles after each refused try
    auth_paused_until REAL               -- until when no work uses the refused credential; then one job tries it again
);

-- Request pacing shared by every process: a call in a bucket waits until next_at, then moves it on.
CREATE TABLE api_pacing (
    bucket TEXT PRIMARY KEY,
    next_at REAL NOT NULL
);

-- The membership ledger: which Pipedrive entity put which email in which filter's Brevo list, as Brevo confirmed it.
CREATE TABLE memberships (
    id INTEGER PRIMARY KEY,
    filter_id INTEGER NOT NULL REFERENCES filters(id) ON DELETE CASCADE,
    entity_id INTEGER NOT NULL,          -- the person (people filter) or the deal (deal filter)
    person_id INTEGER,                   -- the person whose email it is (a deal's person)
    email TEXT,                          -- normalised email, NULL when the member has no valid email
    first_name TEXT,                     -- the person's name, so a known deal's person needs no look-up
    last_name TEXT,
    attrs_hash TEXT,                     -- hash of the email and attributes last confirmed (or rejected)
    state TEXT NOT NULL CHECK (state IN ('listed', 'rejected', 'skipped')),
    created_contact INTEGER NOT NULL DEFAULT 0 CHECK (created_contact IN (0, 1)),
    updated_at INTEGER NOT NULL,
    source_time INTEGER                  -- Pipedrive's update_time of the person data held; older webhook data never overwrites it
);
-- One ledger row per filter and member entity.
CREATE UNIQUE INDEX idx_memberships_filter_entity ON memberships(filter_id, entity_id);
-- Who maps an email, in one filter (the plan, removals) or in any (email changes). Two
-- columns so the planner prefers it to the (filter_id, entity_id) index for email lookups.
CREATE INDEX idx_memberships_email ON memberships(email, filter_id);
-- Deal filters find what the ledger knows of a person.
CREATE INDEX idx_memberships_filter_person ON memberships(filter_id, person_id);

-- The members a running job read from Pipedrive, staged so the diff stays out of memory; deleted when the job ends.
CREATE TABLE sync_members (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES sync_jobs(id) ON DELETE CASCADE,
    entity_id INTEGER NOT NULL,
    person_id INTEGER,
    email TEXT,
    first_name TEXT,
    last_name TEXT,
    attrs_hash TEXT,
    action TEXT NOT NULL DEFAULT 'keep'   -- what the plan does for this member
        CHECK (action IN ('keep', 'add', 'update', 'change', 'skip')),
    done INTEGER NOT NULL DEFAULT 0 CHECK (done IN (0, 1)),  -- 1 once Brevo confirmed this member's write
    source TEXT NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'webhook', 'ledger')),  -- read from Pipedrive, from webhook data, or carried over from the ledger
    source_time INTEGER                  -- Pipedrive's update_time of the staged person data
);
-- One staged row per job and member entity.
CREATE UNIQUE INDEX idx_sync_members_job_entity ON sync_members(job_id, entity_id);
-- The plan groups a job's members by email.
CREATE INDEX idx_sync_members_job_email ON sync_members(job_id, email);

-- Every webhook delivery Pipedrive made, committed before it is answered; the drain works through the pending ones.
CREATE TABLE inbox (
    id INTEGER PRIMARY KEY,
    event_key TEXT NOT NULL UNIQUE,      -- the delivery's event id (v2 meta.id) or a stable hash (v1); a redelivery is a no-op
    version TEXT CHECK (version IN ('1', '2')),  -- the webhooks version; NULL when the body was neither
    object TEXT,                         -- v2 meta.entity or v1 meta.object, e.g. person, deal
    action TEXT,                         -- as sent: create/change/delete (v2) or added/updated/deleted/merged (v1)
    entity_id INTEGER,                   -- the changed object's Pipedrive id; NULL when the delivery has none
    occurred_at INTEGER,                 -- the event's own time (meta.timestamp); NULL when unusable
    received_at INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'ignored', 'processed')),
    reason TEXT,                         -- why the delivery is ignored
    payload TEXT NOT NULL                -- the body exactly as received (UTF-8 JSON)
);
-- The drain takes the oldest pending deliveries; the status page counts them.
CREATE INDEX idx_inbox_status_received_at ON inbox(status, received_at);

-- Worker liveness: each worker's periodic loop records its latest tick here; holders silent for a day are forgotten.
CREATE TABLE worker_heartbeats (
    holder TEXT PRIMARY KEY,             -- the worker process, host:pid
    beat_at INTEGER NOT NULL             -- its latest tick
);

-- Webhook events routed to the linked filters they touch; an incremental job applies and then deletes them.
CREATE TABLE filter_changes (
    id INTEGER PRIMARY KEY,
    filter_id INTEGER NOT NULL REFERENCES filters(id) ON DELETE CASCADE,
    inbox_id INTEGER NOT NULL,           -- the delivery it came from (the inbox row may be pruned later)
    kind TEXT NOT NULL CHECK (kind IN ('member', 'person', 'relist')),  -- a member entity changed; a member's person changed (deal filters); list the filter whole
    action TEXT CHECK (action IN ('create', 'change', 'delete')),       -- NULL for relist
    entity_id INTEGER,                   -- the person or deal; NULL for relist
    occurred_at INTEGER NOT NULL,        -- the event's time (its received time when it had none)
    data_time INTEGER,                   -- the person's update_time in the webhook data; NULL when it carried none
    email TEXT,                          -- the person's normalised primary email in the webhook data
    first_name TEXT,
    last_name TEXT,
    merged_to INTEGER                    -- on a person deleted by a merge, the surviving person
);
-- A job takes its filter's changes in id order.
CREATE INDEX idx_filter_changes_filter ON filter_changes(filter_id, id);

-- Contacts this service saw Brevo confirm, with the attributes hash confirmed: such a contact only needs adding to a list, whatever filter it came from.
CREATE TABLE brevo_contacts (
    email TEXT PRIMARY KEY,              -- normalised email
    attrs_hash TEXT NOT NULL,            -- hash of the email and attributes Brevo confirmed
    confirmed_at INTEGER NOT NULL
);

-- Emails a job is sending to a filter's list, written before the call: a worker killed before the ledger recorded Brevo's answer leaves them here, and the next run takes them out unless a member maps them.
CREATE TABLE brevo_sends (
    id INTEGER PRIMARY KEY,
    filter_id INTEGER NOT NULL REFERENCES filters(id) ON DELETE CASCADE,
    job_id INTEGER NOT NULL,             -- the job that sent it
    email TEXT NOT NULL,
    sent_at INTEGER NOT NULL
);
-- The plan looks a filter's sends up by email.
CREATE INDEX idx_brevo_sends_filter_email ON brevo_sends(filter_id, email);
