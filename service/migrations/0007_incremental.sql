-- Version 7: what the webhook-driven incremental sync needs. Additions only.

-- The objects other than its own that the filter's conditions name (e.g. "deal,organization"); NULL until read.
ALTER TABLE filters ADD COLUMN related_objects TEXT;

-- Pipedrive's update_time (unix seconds) of the person data the row holds; older webhook data never overwrites it.
ALTER TABLE memberships ADD COLUMN source_time INTEGER;

-- Where a staged row came from: read from Pipedrive, taken from webhook data, or carried over from the ledger.
ALTER TABLE sync_members ADD COLUMN source TEXT NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'webhook', 'ledger'));
-- Pipedrive's update_time (unix seconds) of the staged person data, recorded into the ledger.
ALTER TABLE sync_members ADD COLUMN source_time INTEGER;

-- Until when Pipedrive work waits because the daily token budget is spent (unix seconds); NULL when not paused.
ALTER TABLE api_rate_limits ADD COLUMN paused_until REAL;

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
