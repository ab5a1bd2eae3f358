-- Version 11: the change feed reads an append-only log instead of an index on each table's
-- change stamp.
--
-- Until version 10, `episodes_by_change`, `patterns_by_change` and `heuristics_by_change`
-- indexed `(changed_seq, ns, id)`. Every stamp moved the row's entry from wherever its last
-- stamp had put it (a random leaf of the index) to the end, so a completion that changed a
-- dozen patterns and heuristics wrote about ten index pages for the feed alone. The log is
-- written only at its end: the rows of one transaction share one or two pages, and the
-- oldest rows are deleted from its start.

-- One row per (position, object) a write stamped: kind 1 an episode, 2 a pattern,
-- 3 a heuristic.
CREATE TABLE change_log (
    seq     INTEGER NOT NULL,
    kind    INTEGER NOT NULL,
    ns      TEXT NOT NULL,
    id      TEXT NOT NULL,
    PRIMARY KEY (seq, kind, ns, id)
) WITHOUT ROWID;

-- The log holds every stamp after this position; a reader asking from before it is told to
-- drop everything. Rows stamped before this version are not in the log, so it starts here.
ALTER TABLE change_counter ADD COLUMN log_from INTEGER NOT NULL DEFAULT 0;

UPDATE change_counter SET log_from = seq WHERE id = 1;

DROP INDEX episodes_by_change;

DROP INDEX patterns_by_change;

DROP INDEX heuristics_by_change;

-- Every statement that stamps a row (an insert with a stamp, or an update that assigns
-- `changed_seq`) logs it, whichever build, connection or server session runs it. An episode
-- is inserted unstamped (no cache holds it yet).
CREATE TRIGGER change_log_episode_insert AFTER INSERT ON episodes
WHEN NEW.changed_seq > 0 BEGIN
    INSERT OR IGNORE INTO change_log (seq, kind, ns, id)
    VALUES (NEW.changed_seq, 1, NEW.ns, NEW.id);
END;

CREATE TRIGGER change_log_episode_update AFTER UPDATE OF changed_seq ON episodes
WHEN NEW.changed_seq > 0 BEGIN
    INSERT OR IGNORE INTO change_log (seq, kind, ns, id)
    VALUES (NEW.changed_seq, 1, NEW.ns, NEW.id);
END;

CREATE TRIGGER change_log_pattern_insert AFTER INSERT ON patterns
WHEN NEW.changed_seq > 0 BEGIN
    INSERT OR IGNORE INTO change_log (seq, kind, ns, id)
    VALUES (NEW.changed_seq, 2, NEW.ns, NEW.id);
END;

CREATE TRIGGER change_log_pattern_update AFTER UPDATE OF changed_seq ON patterns
WHEN NEW.changed_seq > 0 BEGIN
    INSERT OR IGNORE INTO change_log (seq, kind, ns, id)
    VALUES (NEW.changed_seq, 2, NEW.ns, NEW.id);
END;

CREATE TRIGGER change_log_heuristic_insert AFTER INSERT ON heuristics
WHEN NEW.changed_seq > 0 BEGIN
    INSERT OR IGNORE INTO change_log (seq, kind, ns, id)
    VALUES (NEW.changed_seq, 3, NEW.ns, NEW.id);
END;

CREATE TRIGGER change_log_heuristic_update AFTER UPDATE OF changed_seq ON heuristics
WHEN NEW.changed_seq > 0 BEGIN
    INSERT OR IGNORE INTO change_log (seq, kind, ns, id)
    VALUES (NEW.changed_seq, 3, NEW.ns, NEW.id);
END;

-- Every 256th position, the rows more than 4,096 positions old are deleted (the start of
-- the log, a few pages) and `log_from` moves up. A cache that far behind is cleared instead
-- of reading what changed (at the dozen or so objects a completion stamps, it would have had
-- more than the 10,000 changes a cache reads before it clears itself anyway).
CREATE TRIGGER change_log_prune AFTER UPDATE OF seq ON change_counter
WHEN NEW.seq % 256 = 0 AND NEW.seq > 4096 BEGIN
    DELETE FROM change_log WHERE seq <= NEW.seq - 4096;
    UPDATE change_counter SET log_from = NEW.seq - 4096
    WHERE id = 1 AND log_from < NEW.seq - 4096;
END;

