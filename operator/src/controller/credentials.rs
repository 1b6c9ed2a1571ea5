//! The Secrets a reconcile reads or makes: the database password, read back from the
//! credentials Secret or generated once when that Secret does not exist (the one place that
//! does either), the shared server's admin URL, and the namespace's service key.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{PostParams, ResourceExt};
use ring::rand::SecureRandom;

use super::context::{Context, Error, Note};
use super::shared_database::{self, AdminServer, Problem};
use crate::build::common::{MANAGER, names, service_key_secret};
use crate::build::database;
use crate::crd::ShopService;

/// The length of a generated database password: 32 characters of 64 possible ones, 192 bits.
const PASSWORD_LENGTH: usize = 32;
const PASSWORD_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A database password and, when it was generated just now, the Event that says so (never
/// the password itself).
pub struct Password {
    pub password: String,
    pub generated: Option<Note>,
}

// By hand: the password must never reach a log line through `{:?}`.
impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Password")
            .field("password", &"<redacted>")
            .field("generated", &self.generated)
            .finish()
    }
}

/// The database's password: read back from its Secret, or generated once when the Secret
/// does not exist yet. The caller writes the Secret before anything uses the password.
pub async fn database_password(shop: &ShopService, ctx: &Context) -> Result<Password, Error> {
    let namespace = shop.namespace().ok_or(Error::NotNamespaced)?;
    let secret_name = names::credentials_secret(&shop.name_any());
    if let Some(password) = ctx.children.known_password(&namespace, &secret_name) {
        return Ok(Password {
            password,
            generated: None,
        });
    }
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    let existing = secrets
        .get_opt(&secret_name)
        .await
        .map_err(Error::kube(format!("read Secret {secret_name}")))?;
    match existing {
        Some(secret) => {
            let password = secret
                .data
                .as_ref()
                .and_then(|data| data.get("password"))
                .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok());
            // A new password would not open the existing database: refuse rather than rotate.
            let password = password.ok_or(Error::CredentialsWithoutPassword { secret_name })?;
            Ok(Password {
                password,
                generated: None,
            })
        }
        None => Ok(Password {
            password: generate_password(&ctx.random)?,
            generated: Some(Note::normal(
                "GeneratedCredentials",
                "Provision",
                format!("generated the database password into Secret {secret_name}"),
            )),
        }),
    }
}

fn generate_password(random: &ring::rand::SystemRandom) -> Result<String, Error> {
    let mut bytes = [0u8; PASSWORD_LENGTH];
    random.fill(&mut bytes).map_err(|_| Error::Random)?;
    // 256 is a multiple of 64, so every character is equally likely.
    Ok(bytes
        .iter()
        .map(|byte| PASSWORD_ALPHABET[usize::from(byte % 64)] as char)
        .collect())
}

/// Makes the namespace's service key Secret unless the watch shows it. Created, never
/// applied: a key that changed would cut the running services off from each other. Not owned
/// by one ShopService (it serves them all); the cleanup of the namespace's last one deletes it.
pub async fn ensure_service_key(shop: &ShopService, ctx: &Context) -> Result<Option<Note>, Error> {
    let namespace = shop.namespace().ok_or(Error::NotNamespaced)?;
    if ctx
        .children
        .has_secret(&namespace, names::SERVICE_KEY_SECRET)
    {
        return Ok(None);
    }
    let secret = service_key_secret(&namespace, shop_kit::ServiceKey::generate());
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    let params = PostParams {
        field_manager: Some(MANAGER.into()),
        ..PostParams::default()
    };
    match secrets.create(&params, &secret).await {
        Ok(_) => Ok(Some(Note::normal(
            "GeneratedServiceKey",
            "Provision",
            format!(
                "generated Secret {}: the key the services of this namespace sign their calls to each other's internal APIs with",
                names::SERVICE_KEY_SECRET
            ),
        ))),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
        Err(error) => Err(Error::Kube {
            action: format!("create Secret {}", names::SERVICE_KEY_SECRET),
            error,
        }),
    }
}

/// The shared server named by `spec.database.sharedServerSecret`, or why it cannot be used.
pub async fn admin_server(
    shop: &ShopService,
    ctx: &Context,
) -> Result<Result<AdminServer, Problem>, Error> {
    let namespace = shop.namespace().ok_or(Error::NotNamespaced)?;
    let Some(secret_name) = shop.spec.database.shared_server_secret.as_deref() else {
        return Ok(Err(Problem::new(
            shared_database::SECRET_MISSING,
            "spec.database.sharedServerSecret is not set: name the Secret that holds the shared server's admin URL",
        )));
    };
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    let secret = secrets
        .get_opt(secret_name)
        .await
        .map_err(Error::kube(format!("read Secret {secret_name}")))?;
    let Some(secret) = secret else {
        return Ok(Err(Problem::new(
            shared_database::SECRET_MISSING,
            format!(
                "Secret {secret_name} (spec.database.sharedServerSecret) does not exist in namespace {namespace}"
            ),
        )));
    };
    let text = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .and_then(|bytes| std::str::from_utf8(&bytes.0).ok())
    };
    Ok(match text("url") {
        Some(url) => AdminServer::parse(url, secret_name, text(database::CA_KEY)),
        None => Err(Problem::new(
            shared_database::URL_INVALID,
            format!(
                "Secret {secret_name} (spec.database.sharedServerSecret) has no key `url` with the shared server's admin URL (postgres://user:password@host:port/database)"
            ),
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_long_url_safe_and_different() {
        let random = ring::rand::SystemRandom::new();
        let first = generate_password(&random).unwrap();
        let second = generate_password(&random).unwrap();
        assert_eq!(first.len(), PASSWORD_LENGTH);
        assert!(first.bytes().all(|b| PASSWORD_ALPHABET.contains(&b)));
        assert_ne!(first, second);
    }

    #[test]
    fn a_password_is_never_in_the_debug_form() {
        let password = Password {
            password: "hunter2".into(),
            generated: None,
        };
        assert!(!format!("{password:?}").contains("hunter2"));
    }
}
