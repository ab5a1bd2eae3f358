-- Version 13: forgetting. An erasure removes an episode's rows and what it taught; what
-- remains is one audit record per episode (no content: the id, when, and the reason given).
-- Its id is never stored again: a start replayed from a journal after the erasure (another
-- process's, adopted late) inserts nothing, as a replay of an existing episode does.
CREATE TABLE forgotten_episodes (
    ns           TEXT NOT NULL,
    episode_id   TEXT NOT NULL,
    forgotten_at INTEGER NOT NULL,
    reason       TEXT NOT NULL,
    PRIMARY KEY (ns, episode_id)
);

CREATE INDEX forgotten_by_time ON forgotten_episodes (ns, forgotten_at DESC, episode_id DESC);

CREATE TRIGGER episodes_forgotten_stay_gone BEFORE INSERT ON episodes
WHEN EXISTS (SELECT 1 FROM forgotten_episodes WHERE ns = NEW.ns AND episode_id = NEW.id)
BEGIN
    SELECT RAISE(IGNORE);
END;
