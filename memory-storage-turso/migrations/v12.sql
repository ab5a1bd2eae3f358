-- Version 12: the active heuristic of each condition key, indexed on its own.
--
-- A completion merges what its episode observed into the heuristics of each condition key
-- the episode touched. Until now it read every heuristic of those keys that was not pruned,
-- superseded ones included: competitors accumulate, so that read grew with the store (about
-- 11 heuristics per observed key at 10,000 episodes, 26 on average). A key is left resolved
-- by every merge (one active heuristic that outranks the others, each superseded by it), so
-- the merge needs only the active one and the observed ones, unless the active one loses
-- ground or is overtaken (see `LearningUpdate::keys_needing_whole_group`); then it reads
-- the whole key as before. This index finds the active one without reading the rest. Its
-- entries change only when a heuristic's status does, never on new evidence.
CREATE INDEX heuristics_active_by_condition ON heuristics (ns, condition_key)
    WHERE status = 'active';

-- The change log's triggers again, so that a row stamped twice by one transaction (a
-- heuristic a merge wrote, then resolving its key set aside) is logged once. Version 11's
-- `INSERT OR IGNORE` did not ignore the second: a statement a trigger runs takes the conflict
-- policy of the statement that fired it when that one names a policy, and an upsert does, so
-- the duplicate failed the transaction. An update now logs only when it changes the stamp (a
-- row keeps the position it was logged under), and an insert looks before it logs.
DROP TRIGGER change_log_episode_insert;
DROP TRIGGER change_log_episode_update;
DROP TRIGGER change_log_pattern_insert;
DROP TRIGGER change_log_pattern_update;
DROP TRIGGER change_log_heuristic_insert;
DROP TRIGGER change_log_heuristic_update;

CREATE TRIGGER change_log_episode_insert AFTER INSERT ON episodes
WHEN NEW.changed_seq > 0 BEGIN
    INSERT INTO change_log (seq, kind, ns, id)
    SELECT NEW.changed_seq, 1, NEW.ns, NEW.id WHERE NOT EXISTS (SELECT 1 FROM change_log
        WHERE seq = NEW.changed_seq AND kind = 1 AND ns = NEW.ns AND id = NEW.id);
END;

CREATE TRIGGER change_log_episode_update AFTER UPDATE OF changed_seq ON episodes
WHEN NEW.changed_seq > 0 AND NEW.changed_seq <> OLD.changed_seq BEGIN
    INSERT INTO change_log (seq, kind, ns, id)
    SELECT NEW.changed_seq, 1, NEW.ns, NEW.id WHERE NOT EXISTS (SELECT 1 FROM change_log
        WHERE seq = NEW.changed_seq AND kind = 1 AND ns = NEW.ns AND id = NEW.id);
END;

CREATE TRIGGER change_log_pattern_insert AFTER INSERT ON patterns
WHEN NEW.changed_seq > 0 BEGIN
    INSERT INTO change_log (seq, kind, ns, id)
    SELECT NEW.changed_seq, 2, NEW.ns, NEW.id WHERE NOT EXISTS (SELECT 1 FROM change_log
        WHERE seq = NEW.changed_seq AND kind = 2 AND ns = NEW.ns AND id = NEW.id);
END;

CREATE TRIGGER change_log_pattern_update AFTER UPDATE OF changed_seq ON patterns
WHEN NEW.changed_seq > 0 AND NEW.changed_seq <> OLD.changed_seq BEGIN
    INSERT INTO change_log (seq, kind, ns, id)
    SELECT NEW.changed_seq, 2, NEW.ns, NEW.id WHERE NOT EXISTS (SELECT 1 FROM change_log
        WHERE seq = NEW.changed_seq AND kind = 2 AND ns = NEW.ns AND id = NEW.id);
END;

CREATE TRIGGER change_log_heuristic_insert AFTER INSERT ON heuristics
WHEN NEW.changed_seq > 0 BEGIN
    INSERT INTO change_log (seq, kind, ns, id)
    SELECT NEW.changed_seq, 3, NEW.ns, NEW.id WHERE NOT EXISTS (SELECT 1 FROM change_log
        WHERE seq = NEW.changed_seq AND kind = 3 AND ns = NEW.ns AND id = NEW.id);
END;

CREATE TRIGGER change_log_heuristic_update AFTER UPDATE OF changed_seq ON heuristics
WHEN NEW.changed_seq > 0 AND NEW.changed_seq <> OLD.changed_seq BEGIN
    INSERT INTO change_log (seq, kind, ns, id)
    SELECT NEW.changed_seq, 3, NEW.ns, NEW.id WHERE NOT EXISTS (SELECT 1 FROM change_log
        WHERE seq = NEW.changed_seq AND kind = 3 AND ns = NEW.ns AND id = NEW.id);
END;
