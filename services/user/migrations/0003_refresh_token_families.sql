-- Refresh tokens of one sign-in share a family: signing out revokes the family, and a rotated
-- token presented again (a sign it was copied) revokes the whole family, as OAuth 2.0's
-- refresh-token rotation recommends. `used` now holds the Unix time the token was used (0: not
-- yet; earlier rows hold 1), so that a replay within seconds of the rotation (two requests
-- refreshing at once) is refused without signing the user out.
ALTER TABLE refresh_tokens ADD COLUMN family TEXT;
UPDATE refresh_tokens SET family = token_hash WHERE family IS NULL;
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
