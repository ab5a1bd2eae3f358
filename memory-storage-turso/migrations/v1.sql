-- Version 1: episodes, steps, tags, learned items, feedback and the full-text index.

-- One row per episode. Timestamps are nanoseconds since the Unix epoch (UTC). JSON text
-- columns hold the parts that are read back whole; the filterable fields are columns.
-- Rows are kilobytes (reward, reflection), so tables with large rows keep a rowid (a
-- WITHOUT ROWID b-tree with such rows was 25x slower to list), and the big text columns
-- come last so summaries do not read their overflow pages.
CREATE TABLE episodes (
    ns               TEXT NOT NULL,
    id               TEXT NOT NULL,
    task_type        TEXT NOT NULL,
    domain           TEXT NOT NULL,
    language         TEXT,
    framework        TEXT,
    complexity       TEXT NOT NULL,
    started_at       INTEGER NOT NULL,
    completed_at     INTEGER,
    outcome_kind     TEXT,
    reward_total     REAL,
    step_count       INTEGER NOT NULL DEFAULT 0,
    tags             TEXT NOT NULL,
    task_description TEXT NOT NULL,
    outcome          TEXT,
    reward           TEXT,
    reflection       TEXT,
    PRIMARY KEY (ns, id)
);

CREATE INDEX episodes_by_start ON episodes (ns, started_at DESC, id DESC);

CREATE INDEX episodes_by_context ON episodes (ns, task_type, domain, language, started_at DESC);

CREATE INDEX episodes_by_outcome ON episodes (ns, outcome_kind, started_at DESC);

CREATE TABLE episode_tags (
    ns         TEXT NOT NULL,
    tag        TEXT NOT NULL,
    episode_id TEXT NOT NULL,
    PRIMARY KEY (ns, tag, episode_id),
    FOREIGN KEY (ns, episode_id) REFERENCES episodes (ns, id)
) WITHOUT ROWID;

-- Steps are appended as rows, never by rewriting the episode.
CREATE TABLE steps (
    ns          TEXT NOT NULL,
    episode_id  TEXT NOT NULL,
    step_number INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    tool        TEXT NOT NULL,
    action      TEXT NOT NULL,
    parameters  TEXT NOT NULL,
    status      TEXT NOT NULL,
    result_text TEXT NOT NULL,
    latency_ms  INTEGER NOT NULL,
    tokens      INTEGER,
    PRIMARY KEY (ns, episode_id, step_number),
    FOREIGN KEY (ns, episode_id) REFERENCES episodes (ns, id)
);

-- Learned items: the item as JSON in `body`, plus the columns queries filter and sort on.
-- Unset context fields are NULL and match any query value.
CREATE TABLE patterns (
    ns          TEXT NOT NULL,
    id          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    task_type   TEXT,
    domain      TEXT,
    language    TEXT,
    status      TEXT NOT NULL,
    occurrences INTEGER NOT NULL,
    successes   INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (ns, id)
);

CREATE INDEX patterns_by_occurrences ON patterns (ns, occurrences DESC, id);

CREATE TABLE heuristics (
    ns            TEXT NOT NULL,
    id            TEXT NOT NULL,
    condition_key TEXT NOT NULL,
    task_type     TEXT,
    domain        TEXT,
    language      TEXT,
    status        TEXT NOT NULL,
    support       INTEGER NOT NULL,
    against       INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    body          TEXT NOT NULL,
    PRIMARY KEY (ns, id)
);

CREATE INDEX heuristics_by_condition ON heuristics (ns, condition_key);

CREATE INDEX heuristics_by_support ON heuristics (ns, support DESC, id);

CREATE TABLE lessons (
    ns          TEXT NOT NULL,
    id          TEXT NOT NULL,
    task_type   TEXT,
    domain      TEXT,
    language    TEXT,
    status      TEXT NOT NULL,
    failed_tool TEXT NOT NULL,
    error_class TEXT NOT NULL,
    occurrences INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (ns, id)
);

CREATE INDEX lessons_by_occurrences ON lessons (ns, occurrences DESC, id);

-- Pattern-usage (feedback) events: one per (target, episode); `seq` is insertion order.
CREATE TABLE feedback (
    seq         INTEGER PRIMARY KEY,
    ns          TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    episode_id  TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,
    UNIQUE (ns, target_kind, target_id, episode_id)
);

CREATE INDEX feedback_by_target ON feedback (ns, target_kind, target_id, seq);

-- Full-text index: one row per episode part (`task`, each appended batch of `steps`,
-- `reflection`), written in the same transaction as the rows it indexes.
CREATE VIRTUAL TABLE episode_text USING fts5 (
    body,
    ns UNINDEXED,
    episode_id UNINDEXED,
    part UNINDEXED,
    tokenize = 'unicode61 remove_diacritics 0'
);
