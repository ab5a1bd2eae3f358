-- Version 8: steps are stored in pages, one row per batch of up to 64 consecutive steps of an
-- episode, instead of a row per step in `steps` with its key in `steps_by_key`. A batch is
-- then one row written, not one row and one key-index entry per step. The migration copies
-- every episode's steps into pages (in Rust, after this file: `step_pages::pack_v7_steps`)
-- and then drops `steps` and its index.

CREATE TABLE step_pages (
    ns           TEXT NOT NULL,
    episode_id   TEXT NOT NULL,
    first_number INTEGER NOT NULL,
    count        INTEGER NOT NULL,
    keys         TEXT NOT NULL,
    body         TEXT NOT NULL,
    output_bytes INTEGER NOT NULL,
    PRIMARY KEY (ns, episode_id, first_number),
    FOREIGN KEY (ns, episode_id) REFERENCES episodes (ns, id)
);
