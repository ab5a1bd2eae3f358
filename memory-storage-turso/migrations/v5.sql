-- Version 5: step keys with store-assigned numbers, and the change counter that keeps the
-- caches of several processes and machines coherent.

-- The key the facade drew when the step was logged; the number is assigned inside the
-- append transaction (after the highest stored). Rows of earlier versions have no key.
ALTER TABLE steps ADD COLUMN step_key INTEGER;

CREATE UNIQUE INDEX steps_by_key ON steps (ns, episode_id, step_key) WHERE step_key IS NOT NULL;

-- One row: the position of the last write that changed a cacheable row, and the identity
-- of this database (a restore gives the database a new one).
CREATE TABLE change_counter (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    seq     INTEGER NOT NULL,
    db_id   TEXT NOT NULL
);

INSERT INTO change_counter (id, seq, db_id) VALUES (1, 0, lower(hex(randomblob(16))));

-- Every write that changes one of these rows takes the next counter value and stamps it
-- here; a cache at position p drops exactly the rows stamped after p. The indexes are
-- across namespaces: a process's cache holds every namespace it serves.
ALTER TABLE episodes ADD COLUMN changed_seq INTEGER NOT NULL DEFAULT 0;

ALTER TABLE patterns ADD COLUMN changed_seq INTEGER NOT NULL DEFAULT 0;

ALTER TABLE heuristics ADD COLUMN changed_seq INTEGER NOT NULL DEFAULT 0;

CREATE INDEX episodes_by_change ON episodes (changed_seq, ns, id);

CREATE INDEX patterns_by_change ON patterns (changed_seq, ns, id);

CREATE INDEX heuristics_by_change ON heuristics (changed_seq, ns, id);
