-- Replicas starting together on a fresh database must agree on one signing key: each builds
-- its JWKS from the keys it reads at start, so a second key inserted by a sibling a moment
-- later would be missing from the first replica's JWKS (tokens signed with it then fail with
-- "signed by an unknown key" wherever that JWKS was fetched). The first key is generation 1,
-- and only one row can hold it. Keys stored before this migration keep a NULL generation.
ALTER TABLE signing_keys ADD COLUMN generation INTEGER;
CREATE UNIQUE INDEX signing_keys_generation ON signing_keys (generation);
