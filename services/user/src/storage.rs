//! The user service's tables. Portable SQL over the kit's database.

use shop_kit::Database;
use shop_kit::db::now_rfc3339;

use crate::domain::KeyMaterial;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub roles: String,
    pub created_at: String,
    pub updated_at: String,
}

const USER_COLUMNS: &str = "id, email, name, password_hash, roles, created_at, updated_at";

#[derive(Clone)]
pub struct Store {
    db: Database,
}

/// What presenting a refresh token found.
pub enum Consumed {
    /// Unused and unexpired: now used; new tokens may be issued in its family.
    Fresh { user_id: String, family: String },
    /// Used already, at `used_at` (Unix seconds).
    Reused { family: String, used_at: i64 },
    /// Unknown or expired.
    Invalid,
}

impl Store {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Inserts a user and its `user.registered` event in one transaction; a duplicate email
    /// surfaces as a unique violation and writes neither.
    pub async fn insert_user(&self, user: &UserRow) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "INSERT INTO users (id, email, name, password_hash, roles, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(&user.roles)
        .bind(&user.created_at)
        .bind(&user.updated_at)
        .execute(&mut *tx)
        .await?;
        let registered = shop_contracts::events::USER_REGISTERED;
        let event = shop_events::Event::new(
            registered.name,
            registered.source(),
            registered.version,
            serde_json::json!({"user_id": user.id, "email": user.email, "name": user.name}),
        );
        shop_events::outbox::insert(&mut tx, &event).await?;
        tx.commit().await
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE email = $1"
        ))
        .bind(email)
        .fetch_optional(self.db.pool())
        .await
    }

    pub async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, sqlx::Error> {
        sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await
    }

    /// Changes the name and/or password. A new password also signs the account out everywhere:
    /// its refresh tokens are revoked in the same transaction.
    pub async fn update_user(
        &self,
        id: &str,
        name: Option<&str>,
        password_hash: Option<&str>,
    ) -> Result<Option<UserRow>, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "UPDATE users SET name = COALESCE($2, name), password_hash = COALESCE($3, password_hash), \
             updated_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(name)
        .bind(password_hash)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await?;
        if password_hash.is_some() {
            sqlx::query("DELETE FROM refresh_tokens WHERE user_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.user_by_id(id).await
    }

    /// Stores a refresh token (its hash) of sign-in `family`.
    pub async fn insert_refresh_token(
        &self,
        hash: &str,
        user_id: &str,
        expires_at: i64,
        family: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, user_id, expires_at, family) VALUES ($1, $2, $3, $4)",
        )
        .bind(hash)
        .bind(user_id)
        .bind(expires_at)
        .bind(family)
        .execute(self.db.pool())
        .await
        .map(|_| ())
    }

    /// Marks a refresh token used (at `now`) and returns its user and family, in one statement
    /// so two concurrent refreshes with the same token cannot both succeed; or says the token
    /// was used already, and when.
    pub async fn consume_refresh_token(
        &self,
        hash: &str,
        now: i64,
    ) -> Result<Consumed, sqlx::Error> {
        let fresh: Option<(String, String)> = sqlx::query_as(
            "UPDATE refresh_tokens SET used = $2 WHERE token_hash = $1 AND used = 0 AND expires_at > $2 \
             RETURNING user_id, family",
        )
        .bind(hash)
        .bind(now)
        .fetch_optional(self.db.pool())
        .await?;
        if let Some((user_id, family)) = fresh {
            return Ok(Consumed::Fresh { user_id, family });
        }
        let used: Option<(i64, String)> =
            sqlx::query_as("SELECT used, family FROM refresh_tokens WHERE token_hash = $1")
                .bind(hash)
                .fetch_optional(self.db.pool())
                .await?;
        Ok(match used {
            Some((used_at, family)) if used_at > 0 => Consumed::Reused { family, used_at },
            _ => Consumed::Invalid,
        })
    }

    /// The sign-in family of a refresh token, if it exists.
    pub async fn refresh_token_family(&self, hash: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT family FROM refresh_tokens WHERE token_hash = $1")
            .bind(hash)
            .fetch_optional(self.db.pool())
            .await
    }

    /// Revokes every refresh token of sign-in `family` that is not used yet (they are marked
    /// used at `now`). Returns how many.
    pub async fn revoke_refresh_family(&self, family: &str, now: i64) -> Result<u64, sqlx::Error> {
        Ok(
            sqlx::query("UPDATE refresh_tokens SET used = $2 WHERE family = $1 AND used = 0")
                .bind(family)
                .bind(now)
                .execute(self.db.pool())
                .await?
                .rows_affected(),
        )
    }

    /// Every signing key, newest first; creates the first one on a fresh database.
    pub async fn signing_keys(&self) -> anyhow::Result<Vec<KeyMaterial>> {
        let keys = self.load_keys().await?;
        if !keys.is_empty() {
            return Ok(keys);
        }
        let key = crate::domain::generate_key()?;
        // Replicas starting together each try to insert the first key (generation 1, unique):
        // one wins, the others' inserts do nothing, and every replica then reads the same key.
        sqlx::query(
            "INSERT INTO signing_keys (kid, pkcs8, public_key, created_at, generation) \
             VALUES ($1, $2, $3, $4, 1) ON CONFLICT DO NOTHING",
        )
        .bind(&key.kid)
        .bind(&key.pkcs8)
        .bind(&key.public_key)
        .bind(&key.created_at)
        .execute(self.db.pool())
        .await?;
        Ok(self.load_keys().await?)
    }

    /// Every signing key, newest first.
    pub async fn load_keys(&self) -> Result<Vec<KeyMaterial>, sqlx::Error> {
        sqlx::query_as(
            "SELECT kid, pkcs8, public_key, created_at FROM signing_keys \
             ORDER BY created_at DESC, kid",
        )
        .fetch_all(self.db.pool())
        .await
    }

    /// Stores `key` as the next generation unless a key was made after `newer_than` (Unix
    /// seconds): replicas rotating at once make one key (the others' inserts find it, or lose
    /// the generation). False when another replica's key stands.
    pub async fn insert_next_key(
        &self,
        key: &KeyMaterial,
        newer_than: i64,
    ) -> Result<bool, sqlx::Error> {
        let cutoff = time::OffsetDateTime::from_unix_timestamp(newer_than)
            .map(shop_kit::db::rfc3339)
            .unwrap_or_default();
        // HAVING, not WHERE: an aggregate over no rows is still one row. `WHERE true` keeps
        // SQLite from reading ON CONFLICT as a join's ON.
        let inserted = sqlx::query(
            "INSERT INTO signing_keys (kid, pkcs8, public_key, created_at, generation) \
             SELECT $1, $2, $3, $4, COALESCE(MAX(generation), 0) + 1 FROM signing_keys \
             WHERE true HAVING NOT EXISTS (SELECT 1 FROM signing_keys WHERE created_at > $5) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&key.kid)
        .bind(&key.pkcs8)
        .bind(&key.public_key)
        .bind(&key.created_at)
        .bind(cutoff)
        .execute(self.db.pool())
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// Removes a retired key.
    pub async fn delete_key(&self, kid: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
            .bind(kid)
            .execute(self.db.pool())
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replicas starting together on a fresh database: all of them sign with, and publish, the
    /// same one key.
    #[tokio::test]
    async fn replicas_starting_together_agree_on_one_signing_key() {
        for test_db in shop_kit::testing::all_backends().await {
            let db = Database::connect_and_migrate(&test_db.url, &crate::MIGRATOR)
                .await
                .unwrap();
            let [a, b, c, d] = [(); 4].map(|()| Store::new(db.clone()));
            let started = tokio::join!(
                a.signing_keys(),
                b.signing_keys(),
                c.signing_keys(),
                d.signing_keys()
            );
            let kids: Vec<Vec<String>> = [started.0, started.1, started.2, started.3]
                .into_iter()
                .map(|keys| keys.unwrap().into_iter().map(|k| k.kid).collect())
                .collect();
            assert_eq!(kids[0].len(), 1, "{:?}: one key", test_db.backend);
            assert!(
                kids.iter().all(|k| *k == kids[0]),
                "{:?}: every replica has the same key: {kids:?}",
                test_db.backend
            );
        }
    }

    /// Replicas rotating at the same moment: one new key, whoever asks.
    #[tokio::test]
    async fn replicas_rotating_together_make_one_key() {
        for test_db in shop_kit::testing::all_backends().await {
            let db = Database::connect_and_migrate(&test_db.url, &crate::MIGRATOR)
                .await
                .unwrap();
            let store = Store::new(db.clone());
            store.signing_keys().await.unwrap();
            // The first key is old: a rotation every 60 s is due.
            sqlx::query("UPDATE signing_keys SET created_at = '2000-01-01T00:00:00.000000Z'")
                .execute(db.pool())
                .await
                .unwrap();
            let newer_than = crate::domain::unix_now() - 60;
            let keys = [(); 4].map(|()| crate::domain::generate_key().unwrap());
            let [a, b, c, d] = [(); 4].map(|()| Store::new(db.clone()));
            let made = tokio::join!(
                a.insert_next_key(&keys[0], newer_than),
                b.insert_next_key(&keys[1], newer_than),
                c.insert_next_key(&keys[2], newer_than),
                d.insert_next_key(&keys[3], newer_than)
            );
            let wins = [made.0, made.1, made.2, made.3]
                .into_iter()
                .filter(|m| *m.as_ref().unwrap())
                .count();
            assert_eq!(wins, 1, "{:?}: one replica's key", test_db.backend);
            assert_eq!(store.load_keys().await.unwrap().len(), 2);
            // Not due any more: a key newer than the period's start stands.
            let late = crate::domain::generate_key().unwrap();
            assert!(!store.insert_next_key(&late, newer_than).await.unwrap());
            assert_eq!(store.load_keys().await.unwrap().len(), 2);
        }
    }
}
