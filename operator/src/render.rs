//! `shop-operator render`: what the operator would create for some ShopServices, as YAML,
//! without a cluster — a preview to review, diff or lint.
//!
//! It calls the same pure build layer ([`crate::build::children`]) as the running operator,
//! with an empty observed state: the ShopServices given are the whole namespace, and
//! whatever the API server or the I/O layer would fill in is an obvious placeholder, said so
//! in a YAML comment. In particular it never produces a real password.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::build::{self, Child, Children, Context};
use crate::crd::ShopService;
use anyhow::{Context as _, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

/// What stands in for a generated database password. The running operator draws a random
/// one once and keeps it in the credentials Secret; a preview must never show one.
pub const PLACEHOLDER_PASSWORD: &str = "PLACEHOLDER-the-operator-generates-a-random-password";

/// What stands in for the ShopService's uid in owner references: the API server assigns it.
pub const PLACEHOLDER_UID: &str = "00000000-0000-0000-0000-000000000000";

/// How to render.
#[derive(Clone, Debug)]
pub struct Options {
    /// The namespace of ShopServices whose `metadata.namespace` is not set.
    pub namespace: String,
    /// The image of the bundled services, as the operator's `--default-image`.
    pub default_image: String,
    /// The PostgreSQL image of Dedicated databases, as the operator's `--postgres-image`.
    pub postgres_image: String,
}

/// The ShopServices in a YAML stream (documents separated by `---`). Empty documents are
/// skipped; any other document must be a `shop.dev/v1alpha1` ShopService. `source` names
/// the stream in errors.
pub fn parse_shop_services(yaml: &str, source: &str) -> anyhow::Result<Vec<ShopService>> {
    let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml)
        .with_context(|| format!("{source}: not a YAML stream"))?;
    let mut services = Vec::new();
    for (index, document) in documents.into_iter().enumerate() {
        if document.is_null() {
            continue;
        }
        let api_version = document.get("apiVersion").and_then(|v| v.as_str());
        let kind = document.get("kind").and_then(|v| v.as_str());
        if (api_version, kind) != (Some("shop.dev/v1alpha1"), Some("ShopService")) {
            bail!(
                "{source}: document {} is {}/{}, not a shop.dev/v1alpha1 ShopService",
                index + 1,
                api_version.unwrap_or("<no apiVersion>"),
                kind.unwrap_or("<no kind>")
            );
        }
        let shop: ShopService = serde_json::from_value(document)
            .with_context(|| format!("{source}: document {}", index + 1))?;
        services.push(shop);
    }
    Ok(services)
}

/// Every child of every ShopService in `services`, as one YAML stream. Each ShopService's
/// namespace is made of the ShopServices given for it (their routes, dependencies and ports
/// are what the gateway and the network policies see).
pub fn render(services: &[ShopService], options: &Options) -> anyhow::Result<String> {
    let stored: Vec<ShopService> = services
        .iter()
        .map(|shop| as_if_stored(shop, &options.namespace))
        .collect();
    let mut by_namespace: BTreeMap<&str, Vec<Arc<ShopService>>> = BTreeMap::new();
    for shop in &stored {
        let namespace = shop.metadata.namespace.as_deref().unwrap_or_default();
        by_namespace
            .entry(namespace)
            .or_default()
            .push(Arc::new(shop.clone()));
    }

    let mut out = String::from(
        "# Rendered by `shop-operator render`: the objects the operator would create, built by the\n\
         # same code from these ShopServices alone (nothing read from a cluster).\n\
         # Placeholders, filled in by the API server or the operator when it runs:\n",
    );
    out.push_str(&format!(
        "# - ownerReferences[].uid is {PLACEHOLDER_UID} (the ShopService's uid);\n\
         # - every database password is {PLACEHOLDER_PASSWORD}\n\
         #   (the operator generates a random one once and keeps it in <name>-db-credentials);\n\
         # - the Secret shop-service-key that every pod reads SHOP_SERVICE_KEY from is not shown\n\
         #   (the operator generates it once per namespace: the services' key for internal calls).\n"
    ));
    for shop in &stored {
        let namespace = shop.metadata.namespace.as_deref().unwrap_or_default();
        let context = Context {
            default_image: &options.default_image,
            postgres_image: &options.postgres_image,
            namespace_services: &by_namespace[namespace],
            database_password: Some(PLACEHOLDER_PASSWORD),
        };
        let children = build::children(shop, &context)?;
        write_children(&mut out, children)?;
    }
    Ok(out)
}

/// `shop` with what the API server would have given it: a namespace and a uid.
fn as_if_stored(shop: &ShopService, default_namespace: &str) -> ShopService {
    let mut shop = shop.clone();
    let metadata = &mut shop.metadata;
    metadata
        .namespace
        .get_or_insert_with(|| default_namespace.to_owned());
    metadata
        .uid
        .get_or_insert_with(|| PLACEHOLDER_UID.to_owned());
    shop
}

/// Appends the children in the order the operator applies them.
fn write_children(out: &mut String, children: Children) -> anyhow::Result<()> {
    for child in children.into_apply_order() {
        match child {
            Child::Secret(secret) => {
                let note = "# The password is a placeholder: the operator generates a random one when this\n\
                            # Secret does not exist yet, and never changes it afterwards.\n";
                write_object(
                    out,
                    &Child::Secret(without_real_values(&secret)),
                    Some(note),
                )?;
            }
            other => write_object(out, &other, None)?,
        }
    }
    Ok(())
}

/// The credentials Secret with its values in `stringData`, so that a reader sees the
/// placeholder instead of base64. Refuses (panics) if a value is not the placeholder's text:
/// a real password must never get here.
fn without_real_values(secret: &Secret) -> Secret {
    let data = secret.data.clone().unwrap_or_default();
    let string_data = data
        .into_iter()
        .map(|(key, ByteString(bytes))| {
            let text = String::from_utf8(bytes).expect("the builders write UTF-8 credentials");
            if key == "password" {
                assert_eq!(text, PLACEHOLDER_PASSWORD, "render built a real password");
            }
            (key, text)
        })
        .collect();
    Secret {
        data: None,
        string_data: Some(string_data),
        ..secret.clone()
    }
}

/// One YAML document: `---`, a comment naming the object, `note`, then the object with its
/// `apiVersion` and `kind`.
fn write_object(out: &mut String, child: &Child, note: Option<&str>) -> anyhow::Result<()> {
    let kind = child.kind();
    let meta = child.meta();
    out.push_str(&format!(
        "---\n# {} {}/{}\n",
        kind.kind,
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    ));
    if let Some(note) = note {
        out.push_str(note);
    }
    let mut value = child.to_json()?;
    // k8s-openapi writes apiVersion and kind itself; make sure the document leads with them
    // even for a type that would not.
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), kind.api_version.into());
        map.insert("kind".into(), kind.kind.into());
    }
    out.push_str(&serde_saphyr::to_string(&value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = "\
# a comment-only document first
---
apiVersion: shop.dev/v1alpha1
kind: ShopService
metadata:
  name: cart
spec:
  component: cart
  database:
    mode: Dedicated
  dependsOn: [catalog]
---
apiVersion: shop.dev/v1alpha1
kind: ShopService
metadata:
  name: catalog
  namespace: other
spec:
  component: catalog
";

    fn options() -> Options {
        Options {
            namespace: "preview".into(),
            default_image: "ghcr.io/shop-dev/shop:1.0.0".into(),
            postgres_image: crate::build::database::DEFAULT_POSTGRES_IMAGE.into(),
        }
    }

    #[test]
    fn parses_every_shop_service_and_skips_empty_documents() {
        let services = parse_shop_services(TWO, "two.yaml").unwrap();
        let names: Vec<_> = services
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["cart", "catalog"]);
    }

    #[test]
    fn refuses_a_document_of_another_kind() {
        let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n";
        let error = parse_shop_services(yaml, "cm.yaml").unwrap_err();
        assert!(
            format!("{error:#}").contains("cm.yaml: document 1 is v1/ConfigMap"),
            "{error:#}"
        );
    }

    #[test]
    fn renders_every_child_with_a_placeholder_password_and_namespace() {
        let services = parse_shop_services(TWO, "two.yaml").unwrap();
        let yaml = render(&services, &options()).unwrap();
        let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml).unwrap();
        let objects: Vec<String> = documents
            .iter()
            .filter(|d| !d.is_null())
            .map(|d| {
                format!(
                    "{} {}/{}",
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["namespace"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            objects,
            [
                "ServiceAccount preview/cart",
                "Secret preview/cart-db-credentials",
                "Service preview/cart-db",
                "Service preview/cart-db-headless",
                "NetworkPolicy preview/cart-db",
                "StatefulSet preview/cart-db",
                "Service preview/cart",
                "NetworkPolicy preview/cart",
                "Deployment preview/cart",
                "ServiceAccount other/catalog",
                "Service other/catalog",
                "NetworkPolicy other/catalog",
                "Deployment other/catalog",
            ]
        );
        let secret = &documents.iter().find(|d| d["kind"] == "Secret").unwrap();
        assert_eq!(secret["stringData"]["password"], PLACEHOLDER_PASSWORD);
        assert!(secret.get("data").is_none());
        assert!(yaml.contains("# The password is a placeholder"));
    }

    /// The ingress rules of catalog's own NetworkPolicy in the rendered `yaml`.
    fn catalog_ingress(yaml: &str) -> serde_json::Value {
        let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml).unwrap();
        documents
            .into_iter()
            .find(|d| d["kind"] == "NetworkPolicy" && d["metadata"]["name"] == "catalog")
            .unwrap()["spec"]["ingress"]
            .clone()
    }

    #[test]
    fn services_see_the_others_of_their_namespace_only() {
        // cart depends on catalog: catalog lets cart in only when both are in one namespace.
        let services = parse_shop_services(TWO, "two.yaml").unwrap();
        let apart = catalog_ingress(&render(&services, &options()).unwrap());
        let together: Vec<_> = services
            .into_iter()
            .map(|mut s| {
                s.metadata.namespace = None;
                s
            })
            .collect();
        let together = catalog_ingress(&render(&together, &options()).unwrap());
        assert!(!apart.to_string().contains("\"cart\""), "{apart}");
        assert!(together.to_string().contains("\"cart\""), "{together}");
    }
}
