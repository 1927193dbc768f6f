-- Version 4: what the sync engine needs: the membership ledger, the members a running job
-- staged, and a few columns. Additions only.

-- Pipedrive's update_time of the filter at the last refresh; a change means it may have been edited.
ALTER TABLE filters ADD COLUMN update_time TEXT;
-- SHA-256 of the filter's conditions when last seen; a change schedules a full resync.
ALTER TABLE filters ADD COLUMN conditions_hash TEXT;

-- What the job noticed that the admin should know, such as a Brevo list it had to recreate.
ALTER TABLE sync_jobs ADD COLUMN note TEXT;

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
    updated_at INTEGER NOT NULL
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
    done INTEGER NOT NULL DEFAULT 0 CHECK (done IN (0, 1))  -- 1 once Brevo confirmed this member's write
);
-- One staged row per job and member entity.
CREATE UNIQUE INDEX idx_sync_members_job_entity ON sync_members(job_id, entity_id);
-- The plan groups a job's members by email.
CREATE INDEX idx_sync_members_job_email ON sync_members(job_id, email);
