-- Version 6: the full-text index keeps each namespace's statistics apart. FTS5's `bm25()`
-- computes document frequencies, the document count and the average length over the whole
-- table, so one namespace's episodes changed another's scores (and the time its queries
-- took). Every indexed term now carries a prefix derived from its namespace, so each
-- namespace has its own posting lists; the scores are computed from per-namespace counts
-- (see [`crate::text_index`]).

-- Contentless: the terms are only indexed, never stored a second time.
CREATE VIRTUAL TABLE episode_terms USING fts5 (
    terms,
    content = '',
    contentless_delete = 1,
    tokenize = 'ascii'
);

-- One row per occurrence of a term: the postings a query reads.
CREATE VIRTUAL TABLE episode_terms_hits USING fts5vocab (episode_terms, 'instance');

-- What each index row belongs to, and its length in terms.
CREATE TABLE text_rows (
    id          INTEGER PRIMARY KEY,
    ns          TEXT NOT NULL,
    episode_id  TEXT NOT NULL,
    part        TEXT NOT NULL,
    len         INTEGER NOT NULL
);

CREATE INDEX text_rows_by_episode ON text_rows (ns, episode_id, part);

-- Per namespace: its index rows and their total length (BM25's N and average length).
CREATE TABLE text_stats (
    ns      TEXT PRIMARY KEY,
    rows    INTEGER NOT NULL,
    terms   INTEGER NOT NULL
);

-- The one way rows are written: insert into this view; the trigger keeps the three
-- tables in step in the writer's transaction.
CREATE VIEW text_in (terms, len, ns, episode_id, part) AS SELECT NULL, NULL, NULL, NULL, NULL WHERE 0;

CREATE TRIGGER text_in_insert INSTEAD OF INSERT ON text_in BEGIN
    INSERT INTO text_rows (ns, episode_id, part, len)
        VALUES (NEW.ns, NEW.episode_id, NEW.part, NEW.len);
    INSERT INTO episode_terms (rowid, terms) VALUES (last_insert_rowid(), NEW.terms);
    INSERT INTO text_stats (ns, rows, terms) VALUES (NEW.ns, 1, NEW.len)
        ON CONFLICT (ns) DO UPDATE SET rows = rows + 1, terms = terms + excluded.terms;
END;

CREATE TRIGGER text_rows_delete AFTER DELETE ON text_rows BEGIN
    DELETE FROM episode_terms WHERE rowid = OLD.id;
    UPDATE text_stats SET rows = rows - 1, terms = terms - OLD.len WHERE ns = OLD.ns;
END;
