-- Version 5: the webhook inbox. Additions only.

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
