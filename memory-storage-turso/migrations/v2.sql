-- Version 2: embeddings, with a native libsql vector column.

-- `vector` holds little-endian f32 values, libsql's `F32_BLOB` format, so libsql's vector
-- functions (`vector_distance_cos`, `vector_extract`, ...) work on it directly. No DiskANN
-- index yet: it inserts at ~150 rows/s; the retrieval layer decides when one pays off.
CREATE TABLE embeddings (
    ns         TEXT NOT NULL,
    episode_id TEXT NOT NULL,
    model      TEXT NOT NULL,
    dims       INTEGER NOT NULL,
    vector     F32_BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (ns, episode_id, model),
    FOREIGN KEY (ns, episode_id) REFERENCES episodes (ns, id)
);

CREATE INDEX embeddings_by_model ON embeddings (ns, model, episode_id);
