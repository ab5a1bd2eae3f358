-- Version 3: consolidation runs, learning-metrics snapshots, estimate records, restores.

-- One row per consolidation run; `body` is the run (times and counts) as JSON.
CREATE TABLE consolidation_runs (
    ns         TEXT NOT NULL,
    id         TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (ns, id)
);

CREATE INDEX consolidation_runs_by_start ON consolidation_runs (ns, started_at DESC, id DESC);

-- One learning-metrics snapshot per (namespace, instant).
CREATE TABLE metrics_snapshots (
    ns       TEXT NOT NULL,
    taken_at INTEGER NOT NULL,
    body     TEXT NOT NULL,
    PRIMARY KEY (ns, taken_at)
);

-- A recommendation's estimate stored with the episode that followed it; `completed_at`
-- is set (and the actuals are in `body`) once the episode completes.
CREATE TABLE estimates (
    ns           TEXT NOT NULL,
    episode_id   TEXT NOT NULL,
    domain       TEXT NOT NULL,
    recorded_at  INTEGER NOT NULL,
    completed_at INTEGER,
    body         TEXT NOT NULL,
    PRIMARY KEY (ns, episode_id),
    FOREIGN KEY (ns, episode_id) REFERENCES episodes (ns, id)
);

CREATE INDEX estimates_by_domain ON estimates (ns, domain, completed_at DESC);

CREATE INDEX estimates_by_completion ON estimates (ns, completed_at DESC);

-- The latest restore of each pruned pattern or heuristic brought back by `restore`.
CREATE TABLE learned_restores (
    ns          TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    restored_at INTEGER NOT NULL,
    PRIMARY KEY (ns, target_kind, target_id)
) WITHOUT ROWID;
