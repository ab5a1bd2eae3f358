-- Version 4: the index change log (filled by triggers) and the index snapshots.

-- One row per change to an embedding (any model) or to the summary of an episode that has
-- an embedding, so a process holding the in-process index (or a snapshot of it) at
-- position `seq` re-reads only the episodes changed after it. Written by the triggers
-- below, in the transaction of the change itself.
CREATE TABLE index_changes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    ns         TEXT NOT NULL,
    episode_id TEXT NOT NULL
);

CREATE INDEX index_changes_by_ns ON index_changes (ns, seq);

CREATE TRIGGER index_log_embedding_insert AFTER INSERT ON embeddings BEGIN
    INSERT INTO index_changes (ns, episode_id) VALUES (NEW.ns, NEW.episode_id);
END;

CREATE TRIGGER index_log_embedding_update AFTER UPDATE ON embeddings BEGIN
    INSERT INTO index_changes (ns, episode_id) VALUES (NEW.ns, NEW.episode_id);
END;

CREATE TRIGGER index_log_embedding_delete AFTER DELETE ON embeddings BEGIN
    INSERT INTO index_changes (ns, episode_id) VALUES (OLD.ns, OLD.episode_id);
END;

-- Summary columns only, and only for embedded episodes: an episode is usually embedded
-- after it completes, so its step appends log nothing.
CREATE TRIGGER index_log_episode_update
    AFTER UPDATE OF task_description, task_type, domain, language, framework, complexity,
        tags, step_count, started_at, completed_at, outcome_kind, reward_total ON episodes
    WHEN EXISTS (SELECT 1 FROM embeddings WHERE ns = NEW.ns AND episode_id = NEW.id)
BEGIN
    INSERT INTO index_changes (ns, episode_id) VALUES (NEW.ns, NEW.id);
END;

CREATE TRIGGER index_log_episode_delete AFTER DELETE ON episodes BEGIN
    INSERT INTO index_changes (ns, episode_id) VALUES (OLD.ns, OLD.id);
END;

-- The encoded in-process index of a namespace for one vector key, current as of the log
-- position `as_of` (derived data: the retrieval layer writes and reads it whole). The
-- bytes are stored in parts of at most 1 MiB, each tagged with the write they belong to,
-- so a reader can fetch them on two connections at once.
CREATE TABLE index_snapshots (
    ns         TEXT NOT NULL,
    model      TEXT NOT NULL,
    as_of      INTEGER NOT NULL,
    written_at INTEGER NOT NULL,
    parts      INTEGER NOT NULL,
    bytes      INTEGER NOT NULL,
    PRIMARY KEY (ns, model)
);

CREATE TABLE index_snapshot_parts (
    ns         TEXT NOT NULL,
    model      TEXT NOT NULL,
    part       INTEGER NOT NULL,
    written_at INTEGER NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (ns, model, part)
);
