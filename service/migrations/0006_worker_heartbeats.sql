-- Version 6: worker liveness for the status page. Additions only.

-- Worker liveness: each worker's periodic loop records its latest tick here; holders silent for a day are forgotten.
CREATE TABLE worker_heartbeats (
    holder TEXT PRIMARY KEY,             -- the worker process, host:pid
    beat_at INTEGER NOT NULL             -- its latest tick
);
