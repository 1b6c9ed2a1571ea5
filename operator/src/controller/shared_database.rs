//! A Shared database: a role and a database for one ShopService on a PostgreSQL server that
//! someone else runs. The operator connects to that server with the admin URL from the
//! ShopService's `sharedServerSecret` (one connection per reconcile, no pool).
//!
//! The credentials Secret `<name>-db-credentials` is the source of truth for the password:
//! the reconcile writes it first, then makes the role's password match it. A crash between
//! the two leaves a Secret whose password the next reconcile sets; the other order could leave
//! a role whose password nobody knows.
//!
//! Pure parts (names, quoting, URL parsing) are unit-tested here; the SQL runs against the
//! real server in `tests/e2e/tests/shared_database.rs`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use ring::digest::{SHA256, digest};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Executor, Row};

use crate::build::database::{DatabaseLogin, DatabaseTls};

/// How long a connection to the shared server may take before it counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one statement may take: a `DROP DATABASE` waits for its sessions to end.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// PostgreSQL truncates identifiers longer than this many bytes (NAMEDATALEN - 1).
const MAX_IDENTIFIER: usize = 63;
/// Every role and database the operator makes starts with this.
const PREFIX: &str = "shop_";
/// Hex digits of the hash that tells apart names that read the same (48 bits).
const HASH_DIGITS: usize = 12;

/// The name of the role, and of the database, of ShopService `name` in `namespace`:
/// `shop_<namespace>_<name>_<hash>`, lower-case ASCII letters, digits and `_` only, at most
/// 63 bytes. The readable part may be shortened and maps `-` to `_`, so different ShopServices
/// could read the same (`a-b`/`c` and `a`/`b-c`); the hash of the exact namespace and name
/// keeps them apart.
pub fn identifier(namespace: &str, name: &str) -> String {
    let readable_length = MAX_IDENTIFIER - PREFIX.len() - 1 - HASH_DIGITS;
    let readable: String = format!("{namespace}_{name}")
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .take(readable_length)
        .collect();
    // '/' appears in neither a namespace nor a name, so the hashed text is unambiguous.
    let hash = digest(&SHA256, format!("{namespace}/{name}").as_bytes());
    let hex: String = hash
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("{PREFIX}{readable}_{}", &hex[..HASH_DIGITS])
}

/// `"text"` with every `"` doubled: an SQL identifier that means exactly `text`.
pub fn quote_identifier(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// An SQL string literal that means exactly `text`, whatever `standard_conforming_strings`
/// is: with a backslash in it, the `E'…'` form with backslashes doubled (as PostgreSQL's own
/// `quote_literal` does), otherwise `'…'`; quotes doubled either way.
pub fn quote_literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if quoted.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// Why the shared database is not ready (or could not be cleaned up): the `DatabaseReady`
/// reason and a message for people. Never holds the admin URL or a password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

impl Problem {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

pub const SECRET_MISSING: &str = "SharedServerSecretMissing";
pub const URL_INVALID: &str = "SharedServerURLInvalid";
pub const UNREACHABLE: &str = "SharedServerUnreachable";
pub const AUTHENTICATION_FAILED: &str = "SharedServerAuthenticationFailed";
pub const PERMISSION_DENIED: &str = "SharedServerPermissionDenied";
pub const SERVER_ERROR: &str = "SharedServerError";
pub const LOGIN_FAILED: &str = "SharedLoginFailed";
pub const TLS_FAILED: &str = "SharedServerTLSFailed";

/// What one reconcile found of a Shared database, for the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedState {
    /// The shared server's host, once the admin URL was read.
    pub host: Option<String>,
    /// The role and database name.
    pub identifier: String,
    /// Ready when the service's role logged in to its database.
    pub outcome: Result<(), Problem>,
}

/// The shared server, from the admin URL in `sharedServerSecret`.
pub struct AdminServer {
    options: PgConnectOptions,
    /// Where the service connects as well: the host and port of the admin URL.
    pub host: String,
    pub port: u16,
    /// The admin URL's `sslmode` and the Secret's CA certificate, for the services too.
    pub tls: DatabaseTls,
}

// By hand: the connect options hold the admin password.
impl fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminServer")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl AdminServer {
    /// Parses `url`, the value of key `url` in Secret `secret_name`, whose key `ca.crt` (PEM)
    /// is `ca_pem`. Messages name the Secret, never the URL: it holds the admin password.
    pub fn parse(
        url: &str,
        secret_name: &str,
        ca_pem: Option<&str>,
    ) -> Result<AdminServer, Problem> {
        let invalid = |why: &str| {
            Problem::new(
                URL_INVALID,
                format!(
                    "key `url` of Secret {secret_name} is not a PostgreSQL admin URL (postgres://user:password@host:port/database): {why}"
                ),
            )
        };
        let url = url.trim();
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| invalid("the scheme must be postgres:// or postgresql://"))?;
        // The authority ends at the path, the query or the fragment; the host follows the
        // last '@' of the user information.
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host_and_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if host_and_port.is_empty() || host_and_port.starts_with(':') {
            return Err(invalid("it names no host"));
        }
        let mut options =
            PgConnectOptions::from_str(url).map_err(|_| invalid("it does not parse"))?;
        if options.get_socket().is_some() {
            return Err(invalid(
                "a Unix socket is not reachable from the operator's pod; name a host",
            ));
        }
        let query = |name: &str| {
            let query = url.split_once('?')?.1.split('#').next()?;
            query
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_owned())
        };
        if query("sslrootcert").is_some() {
            return Err(invalid(
                "sslrootcert names a file the operator's and the services' pods do not have; put the CA certificate (PEM) in key `ca.crt` of the Secret instead",
            ));
        }
        if let Some(pem) = ca_pem {
            options = options.ssl_root_cert_from_pem(pem.as_bytes().to_vec());
        }
        Ok(AdminServer {
            host: options.get_host().to_owned(),
            port: options.get_port(),
            tls: DatabaseTls {
                mode: query("sslmode"),
                ca_pem: ca_pem.map(str::to_owned),
            },
            options,
        })
    }

    /// The service's login on this server: the same host and port, its own role, password
    /// and database.
    pub fn login(&self, identifier: &str, password: &str) -> DatabaseLogin {
        DatabaseLogin {
            username: identifier.into(),
            password: password.into(),
            host: self.host.clone(),
            port: i32::from(self.port),
            dbname: identifier.into(),
            tls: self.tls.clone(),
        }
    }

    fn address(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    async fn connect(
        &self,
        options: &PgConnectOptions,
        who: &str,
    ) -> Result<PgConnection, Problem> {
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(options)).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(self.problem(&format!("connect as {who}"), &error)),
            Err(_) => Err(Problem::new(
                UNREACHABLE,
                format!(
                    "cannot reach the shared PostgreSQL server at {}: no connection within {} s",
                    self.address(),
                    CONNECT_TIMEOUT.as_secs()
                ),
            )),
        }
    }

    async fn admin(&self) -> Result<PgConnection, Problem> {
        self.connect(
            &self.options,
            "the admin user of the shared server's Secret",
        )
        .await
    }

    /// Makes the service's role log in with `login`'s password and own `login.dbname`, which
    /// no other service's role may connect to (only it, the admin and superusers). Idempotent:
    /// run on every reconcile.
    pub async fn provision(&self, login: &DatabaseLogin) -> Result<(), Problem> {
        let mut admin = self.admin().await?;
        let result = self
            .in_time("provision", self.provision_on(&mut admin, login))
            .await;
        let _ = admin.close().await;
        result
    }

    /// `work`, or an unreachable server if it does not finish within [`STATEMENT_TIMEOUT`]:
    /// a server that stops answering must not hold a reconcile forever.
    async fn in_time(
        &self,
        action: &str,
        work: impl Future<Output = Result<(), Problem>>,
    ) -> Result<(), Problem> {
        tokio::time::timeout(STATEMENT_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| {
                Err(Problem::new(
                    UNREACHABLE,
                    format!(
                        "{action}: the shared PostgreSQL server at {} did not answer within {} s",
                        self.address(),
                        STATEMENT_TIMEOUT.as_secs()
                    ),
                ))
            })
    }

    async fn provision_on(
        &self,
        admin: &mut PgConnection,
        login: &DatabaseLogin,
    ) -> Result<(), Problem> {
        let role = quote_identifier(&login.username);
        let database = quote_identifier(&login.dbname);
        let password = quote_literal(&login.password);
        // Statements with the password are never logged, by the operator or in an error.
        let create_role = format!("CREATE ROLE {role} LOGIN PASSWORD {password}");
        let alter_role = format!("ALTER ROLE {role} WITH LOGIN PASSWORD {password}");

        let role_exists = sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
            .bind(&login.username)
            .fetch_optional(&mut *admin)
            .await
            .map_err(|e| self.problem("look up the role", &e))?
            .is_some();
        let created = if role_exists {
            false
        } else {
            match admin.execute(create_role.as_str()).await {
                Ok(_) => true,
                // Created meanwhile by someone else: set its password below.
                Err(e) if sql_state(&e).as_deref() == Some("42710") => false,
                Err(e) => return Err(self.problem(&format!("create role {role}"), &e)),
            }
        };
        if !created {
            // The Secret is the source of truth: a password changed on the server by hand
            // is set back.
            admin
                .execute(alter_role.as_str())
                .await
                .map_err(|e| self.problem(&format!("set the password of role {role}"), &e))?;
        }

        // An admin that is no superuser (CREATEROLE and CREATEDB) may only create, and later
        // drop, a database owned by a role it is a member of; superusers are members of all.
        let member: bool =
            sqlx::query_scalar("SELECT pg_has_role(current_user, $1::name, 'MEMBER')")
                .bind(&login.username)
                .fetch_one(&mut *admin)
                .await
                .map_err(|e| self.problem("look up the admin's role memberships", &e))?;
        if !member {
            let grant = format!("GRANT {role} TO CURRENT_USER");
            admin
                .execute(grant.as_str())
                .await
                .map_err(|e| self.problem(&format!("grant role {role} to the admin"), &e))?;
        }

        let database_exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(&login.dbname)
            .fetch_optional(&mut *admin)
            .await
            .map_err(|e| self.problem("look up the database", &e))?
            .is_some();
        if !database_exists {
            // No IF NOT EXISTS, and not in a transaction: tolerate the race instead.
            let create = format!("CREATE DATABASE {database} OWNER {role}");
            match admin.execute(create.as_str()).await {
                Ok(_) => {}
                Err(e) if sql_state(&e).as_deref() == Some("42P04") => {}
                Err(e) => {
                    return Err(self.problem(&format!("create database {database}"), &e));
                }
            }
        }
        // Every role may connect to a new database by default; only the owner may here. The
        // owner keeps its own privilege.
        let revoke = format!("REVOKE ALL ON DATABASE {database} FROM PUBLIC");
        admin.execute(revoke.as_str()).await.map_err(|e| {
            self.problem(
                &format!("revoke the public privileges on database {database}"),
                &e,
            )
        })?;
        Ok(())
    }

    /// Logs in as the service would: its role, its password, its database.
    pub async fn verify(&self, login: &DatabaseLogin) -> Result<(), Problem> {
        let options = self
            .options
            .clone()
            .username(&login.username)
            .password(&login.password)
            .database(&login.dbname);
        let who = format!("role {}", login.username);
        let mut connection = self.connect(&options, &who).await.map_err(|problem| {
            if problem.reason == UNREACHABLE || problem.reason == TLS_FAILED {
                problem
            } else {
                Problem::new(
                    LOGIN_FAILED,
                    format!(
                        "role {} cannot log in to database {}: {}",
                        login.username, login.dbname, problem.message
                    ),
                )
            }
        })?;
        let result = sqlx::query("SELECT 1")
            .fetch_one(&mut connection)
            .await
            .map(|row| row.get::<i32, _>(0));
        let _ = connection.close().await;
        result.map(|_| ()).map_err(|e| self.problem(&who, &e))
    }

    /// Drops the service's database, closing its sessions, and its role. Dropping what is
    /// already gone is no error.
    pub async fn drop_database_and_role(&self, identifier: &str) -> Result<(), Problem> {
        let mut admin = self.admin().await?;
        let result = self
            .in_time("drop", self.drop_on(&mut admin, identifier))
            .await;
        let _ = admin.close().await;
        result
    }

    async fn drop_on(&self, admin: &mut PgConnection, identifier: &str) -> Result<(), Problem> {
        let name = quote_identifier(identifier);
        for (what, statement) in [
            (
                format!("drop database {name}"),
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            ),
            (
                format!("drop role {name}"),
                format!("DROP ROLE IF EXISTS {name}"),
            ),
        ] {
            admin
                .execute(statement.as_str())
                .await
                .map_err(|e| self.problem(&what, &e))?;
        }
        Ok(())
    }

    /// A readable problem for a failed `action`. Database errors carry PostgreSQL's own
    /// message, which never repeats the statement (and so never the password).
    fn problem(&self, action: &str, error: &sqlx::Error) -> Problem {
        let server = self.address();
        match error {
            sqlx::Error::Database(db) => {
                let reason = match db.code().as_deref() {
                    Some("42501") => PERMISSION_DENIED,
                    Some("28P01" | "28000") => AUTHENTICATION_FAILED,
                    Some(code) if code.starts_with("08") || code.starts_with("57P") => UNREACHABLE,
                    _ => SERVER_ERROR,
                };
                let hint = if reason == PERMISSION_DENIED {
                    " (the admin user needs CREATEROLE and CREATEDB)"
                } else {
                    ""
                };
                Problem::new(
                    reason,
                    format!(
                        "{action} on the shared server {server}: {}{hint}",
                        db.message()
                    ),
                )
            }
            // sqlx reports a certificate that does not verify as an I/O error around rustls's.
            sqlx::Error::Io(io)
                if io
                    .get_ref()
                    .is_some_and(|inner| inner.is::<rustls::Error>()) =>
            {
                Problem::new(
                    TLS_FAILED,
                    format!(
                        "{action}: TLS with the shared PostgreSQL server at {server} failed: {io}"
                    ),
                )
            }
            sqlx::Error::Io(io) => Problem::new(
                UNREACHABLE,
                format!("cannot reach the shared PostgreSQL server at {server}: {io}"),
            ),
            // The server's certificate did not verify (verify-ca, verify-full) or the server
            // speaks no TLS (require): rustls says which, and its text holds no secret.
            sqlx::Error::Tls(tls) => Problem::new(
                TLS_FAILED,
                format!(
                    "{action}: TLS with the shared PostgreSQL server at {server} failed: {tls}"
                ),
            ),
            sqlx::Error::Protocol(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
                Problem::new(
                    UNREACHABLE,
                    format!(
                        "{action}: the shared PostgreSQL server at {server} did not answer as PostgreSQL does"
                    ),
                )
            }
            // Other sqlx errors are about decoding or configuration: none holds a secret,
            // but their text is not for users either.
            _ => Problem::new(
                SERVER_ERROR,
                format!("{action} on the shared server {server} failed"),
            ),
        }
    }
}

fn sql_state(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) => db.code().map(|code| code.into_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_short_safe_and_deterministic() {
        let id = identifier("shop", "order-history");
        assert_eq!(id, identifier("shop", "order-history"));
        assert!(id.starts_with("shop_shop_order_history_"), "{id}");
        assert_eq!(id.len(), "shop_shop_order_history_".len() + HASH_DIGITS);
        let longest = identifier(&"n".repeat(63), &"a".repeat(49));
        assert_eq!(longest.len(), MAX_IDENTIFIER);
        for id in [id, longest] {
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{id}"
            );
        }
    }

    #[test]
    fn identifiers_that_read_the_same_differ_in_their_hash() {
        assert_ne!(identifier("a-b", "c"), identifier("a", "b-c"));
        assert_ne!(identifier("a_b", "c"), identifier("a", "b_c"));
        // The same first 45 readable characters, different names.
        let namespace = "n".repeat(63);
        assert_ne!(
            identifier(&namespace, "cart"),
            identifier(&namespace, "catalog")
        );
    }

    #[test]
    fn identifiers_are_quoted_with_doubled_quotes() {
        assert_eq!(quote_identifier("cart"), "\"cart\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
        assert_eq!(
            quote_identifier("x\"; DROP ROLE y; --"),
            "\"x\"\"; DROP ROLE y; --\""
        );
    }

    #[test]
    fn literals_double_quotes_and_escape_backslashes() {
        assert_eq!(quote_literal("s3cret"), "'s3cret'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\b'c"), r"E'a\\b''c'");
        assert_eq!(quote_literal(""), "''");
    }

    #[test]
    fn an_admin_url_gives_the_host_and_port_of_the_login() {
        let server = AdminServer::parse(
            "postgres://admin:pw@db.example.org:6543/postgres",
            "s",
            None,
        )
        .unwrap();
        assert_eq!(
            (server.host.as_str(), server.port),
            ("db.example.org", 6543)
        );
        let login = server.login("shop_x_1", "pa'ss");
        assert_eq!(login.host, "db.example.org");
        assert_eq!(login.port, 6543);
        assert_eq!(login.username, "shop_x_1");
        assert_eq!(login.dbname, "shop_x_1");
        assert_eq!(
            login.uri(),
            "postgres://shop_x_1:pa%27ss@db.example.org:6543/shop_x_1"
        );

        let default_port =
            AdminServer::parse("postgresql://admin@10.0.0.7/postgres", "s", None).unwrap();
        assert_eq!(
            (default_port.host.as_str(), default_port.port),
            ("10.0.0.7", 5432)
        );
    }

    #[test]
    fn invalid_admin_urls_are_refused_without_repeating_them() {
        for url in [
            "mysql://admin:hunter2@db/x",
            "hunter2",
            "postgres://admin:hunter2@/postgres",
            "postgres:///postgres?host=/var/run/postgresql",
            "postgres://admin:hunter2@db:notaport/postgres",
            "postgres://admin:hunter2@db/postgres?sslmode=sometimes",
            "postgres://admin:hunter2@db/postgres?sslmode=verify-full&sslrootcert=/etc/ca.crt",
            "",
        ] {
            let problem = AdminServer::parse(url, "shared-pg", None).unwrap_err();
            assert_eq!(problem.reason, URL_INVALID, "{url}");
            assert!(problem.message.contains("Secret shared-pg"), "{url}");
            assert!(!problem.message.contains("hunter2"), "{url}");
        }
    }

    #[test]
    fn the_servers_sslmode_and_ca_reach_the_services_uri() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let server = AdminServer::parse(
            "postgres://admin:pw@db.example.org/postgres?sslmode=verify-full",
            "s",
            Some(pem),
        )
        .unwrap();
        let login = server.login("shop_cart", "secret");
        assert_eq!(
            login.uri(),
            "postgres://shop_cart:secret@db.example.org:5432/shop_cart?sslmode=verify-full&sslrootcert=/etc/shop/database-ca/ca.crt"
        );
        assert_eq!(login.tls.ca_pem.as_deref(), Some(pem));
        let plain = AdminServer::parse("postgres://admin:pw@db/postgres", "s", None).unwrap();
        assert_eq!(
            plain.login("shop_cart", "secret").uri(),
            "postgres://shop_cart:secret@db:5432/shop_cart"
        );
    }

    #[test]
    fn the_debug_form_of_a_server_hides_the_admin_password() {
        let server = AdminServer::parse("postgres://admin:hunter2@db/postgres", "s", None).unwrap();
        assert!(!format!("{server:?}").contains("hunter2"));
    }
}
