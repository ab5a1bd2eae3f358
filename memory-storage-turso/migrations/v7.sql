-- Version 7: steps are stored in the order of their key. Until now `steps` was a rowid table
-- with its primary key (ns, episode_id, step_number) in a separate index: every step was
-- written to three b-trees (the table, that index and `steps_by_key`), and reading an
-- episode's steps went through the index and then to the table row by row. Clustered by its
-- primary key (WITHOUT ROWID), a step is written to two b-trees and an episode's steps are
-- one range of the table. Same columns, same rows.

CREATE TABLE steps_clustered (
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
    step_key    INTEGER,
    PRIMARY KEY (ns, episode_id, step_number),
    FOREIGN KEY (ns, episode_id) REFERENCES episodes (ns, id)
) WITHOUT ROWID;

INSERT INTO steps_clustered (ns, episode_id, step_number, at, tool, action, parameters, status,
    result_text, latency_ms, tokens, step_key)
    SELECT ns, episode_id, step_number, at, tool, action, parameters, status, result_text,
        latency_ms, tokens, step_key
    FROM steps ORDER BY ns, episode_id, step_number;

DROP TABLE steps;

ALTER TABLE steps_clustered RENAME TO steps;

CREATE UNIQUE INDEX steps_by_key ON steps (ns, episode_id, step_key) WHERE step_key IS NOT NULL;
