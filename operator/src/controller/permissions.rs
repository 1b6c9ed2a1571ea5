//! Every Kubernetes permission the operator uses, in one list: the startup check asks the API
//! server about each (SelfSubjectAccessReview) and refuses to start without all of them, and a
//! test holds the operator chart's RBAC (as rendered in `k8s/operator/shop-operator.yaml`) to
//! exactly this list. A new API call in the controller
//! needs a line here, and then the test says which manifest to change.

use std::fmt;

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

/// Where a permission is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Where the ShopServices are: the `--namespace`, or every namespace without it.
    Watched,
    /// The namespace of the leader Lease, only with `--leader-elect`.
    LeaderElection,
}

/// Some verbs on one resource (`resource/subresource` for a subresource), as an RBAC rule
/// names them.
#[derive(Debug)]
pub struct Permission {
    pub group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    pub scope: Scope,
    /// Which calls need it, for people reading a denial.
    pub why: &'static str,
}

const APPLIED: &[&str] = &["list", "watch", "create", "patch"];
const APPLIED_AND_PRUNED: &[&str] = &["list", "watch", "create", "patch", "delete"];

/// What the operator does with the API, call by call in `controller/`. Server-side apply
/// needs `create` besides `patch` for an object that does not exist yet; the controller's
/// watches need `list` and `watch`.
pub const REQUIRED: &[Permission] = &[
    Permission {
        group: "shop.dev",
        resource: "shopservices",
        verbs: &["list", "watch", "patch"],
        scope: Scope::Watched,
        why: "watch ShopServices, list a namespace's, add and remove the finalizer",
    },
    Permission {
        group: "shop.dev",
        resource: "shopservices/status",
        verbs: &["patch"],
        scope: Scope::Watched,
        why: "write the status",
    },
    Permission {
        group: "apps",
        resource: "deployments",
        verbs: APPLIED,
        scope: Scope::Watched,
        why: "apply and watch the workloads",
    },
    Permission {
        group: "apps",
        resource: "statefulsets",
        verbs: APPLIED_AND_PRUNED,
        scope: Scope::Watched,
        why: "apply and watch the Dedicated databases; delete one (orphaning its pod and claim) to create it again when a field that cannot change in place must change",
    },
    Permission {
        group: "",
        resource: "services",
        verbs: APPLIED,
        scope: Scope::Watched,
        why: "apply and watch the Services",
    },
    Permission {
        group: "",
        resource: "serviceaccounts",
        verbs: APPLIED,
        scope: Scope::Watched,
        why: "apply and watch the workloads' ServiceAccounts",
    },
    Permission {
        group: "networking.k8s.io",
        resource: "networkpolicies",
        verbs: APPLIED,
        scope: Scope::Watched,
        why: "apply and watch the NetworkPolicies",
    },
    Permission {
        group: "autoscaling",
        resource: "horizontalpodautoscalers",
        verbs: APPLIED_AND_PRUNED,
        scope: Scope::Watched,
        why: "apply, watch and prune the autoscalers",
    },
    Permission {
        group: "policy",
        resource: "poddisruptionbudgets",
        verbs: APPLIED_AND_PRUNED,
        scope: Scope::Watched,
        why: "apply, watch and prune the disruption budgets",
    },
    Permission {
        group: "",
        resource: "configmaps",
        verbs: APPLIED_AND_PRUNED,
        scope: Scope::Watched,
        why: "apply, watch and prune the gateway's route table",
    },
    Permission {
        group: "",
        resource: "secrets",
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        scope: Scope::Watched,
        why: "read back, apply, release (Retain) and delete (Delete) database credentials",
    },
    Permission {
        group: "",
        resource: "persistentvolumeclaims",
        verbs: &["get", "patch", "deletecollection"],
        scope: Scope::Watched,
        why: "grow a Dedicated database's volume; delete the volumes of a database whose deletionPolicy is Delete",
    },
    Permission {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        scope: Scope::Watched,
        why: "publish Events about ShopServices",
    },
    Permission {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
        scope: Scope::LeaderElection,
        why: "hold the leader Lease",
    },
];

/// How many access reviews are in flight at once during the startup check.
const REVIEWS_AT_ONCE: usize = 4;

/// Where the RBAC that grants [`REQUIRED`] is kept, for the message of a failed check.
pub const RBAC_MANIFEST: &str = "k8s/operator/shop-operator.yaml";

/// One verb on one resource in one namespace (every namespace when `None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub group: &'static str,
    pub resource: &'static str,
    pub verb: &'static str,
    pub namespace: Option<String>,
}

impl fmt::Display for Access {
    /// As `kubectl auth can-i` takes it: `create secrets`, `patch shopservices.shop.dev/status`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (resource, subresource) = split_subresource(self.resource);
        write!(f, "{} {resource}", self.verb)?;
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        if let Some(subresource) = subresource {
            write!(f, "/{subresource}")?;
        }
        Ok(())
    }
}

fn split_subresource(resource: &str) -> (&str, Option<&str>) {
    match resource.split_once('/') {
        Some((resource, subresource)) => (resource, Some(subresource)),
        None => (resource, None),
    }
}

/// Every access the operator needs when it watches `watched` (every namespace when `None`)
/// and, with leader election, holds its Lease in `lease_namespace`.
pub fn needed(watched: Option<&str>, lease_namespace: Option<&str>) -> Vec<Access> {
    REQUIRED
        .iter()
        .filter_map(|permission| match permission.scope {
            Scope::Watched => Some((permission, watched)),
            Scope::LeaderElection => lease_namespace.map(|namespace| (permission, Some(namespace))),
        })
        .flat_map(|(permission, namespace)| {
            permission.verbs.iter().map(move |verb| Access {
                group: permission.group,
                resource: permission.resource,
                verb,
                namespace: namespace.map(str::to_owned),
            })
        })
        .collect()
}

/// The message for the accesses that were denied: every one of them, by namespace, and what
/// grants them.
pub fn denial_message(denied: &[Access]) -> String {
    let mut scopes: Vec<Option<&str>> = Vec::new();
    for access in denied {
        if !scopes.contains(&access.namespace.as_deref()) {
            scopes.push(access.namespace.as_deref());
        }
    }
    let parts: Vec<String> = scopes
        .into_iter()
        .map(|scope| {
            let accesses: Vec<String> = denied
                .iter()
                .filter(|access| access.namespace.as_deref() == scope)
                .map(ToString::to_string)
                .collect();
            let place = match scope {
                Some(namespace) => format!("in namespace {namespace}"),
                None => "in every namespace (no --namespace given)".to_owned(),
            };
            format!("{} {place}", accesses.join(", "))
        })
        .collect();
    format!(
        "the operator's identity is missing {} RBAC permission(s) it needs: {}. Grant them as the chart charts/shop-operator does (rendered in {RBAC_MANIFEST}: bind the ClusterRole shop-operator to the operator's ServiceAccount, with a RoleBinding in the watched namespace when --namespace is given, and the Role shop-operator-leader-election for --leader-elect), then restart the operator",
        denied.len(),
        parts.join("; ")
    )
}

/// Asks the API server, for each access the operator needs, whether its own identity has it,
/// and fails with one message naming every missing one. Any authenticated identity may ask
/// this about itself (`system:basic-user`), so the check needs no permission of its own.
pub async fn check(
    client: &Client,
    watched: Option<&str>,
    lease_namespace: Option<&str>,
) -> anyhow::Result<()> {
    let reviews = Api::<SelfSubjectAccessReview>::all(client.clone());
    let needed = needed(watched, lease_namespace);
    // A few at a time: some forty small requests, not a burst on the API server.
    let answers: Vec<bool> = stream::iter(needed.iter().map(review_of))
        .map(|review| allowed(reviews.clone(), review))
        .buffered(REVIEWS_AT_ONCE)
        .try_collect()
        .await
        .map_err(|e| anyhow::anyhow!(e).context("cannot check the operator's RBAC permissions"))?;
    let denied: Vec<Access> = needed
        .into_iter()
        .zip(answers)
        .filter(|(_, allowed)| !allowed)
        .map(|(access, _)| access)
        .collect();
    if denied.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(denial_message(&denied)))
    }
}

fn review_of(access: &Access) -> SelfSubjectAccessReview {
    let (resource, subresource) = split_subresource(access.resource);
    SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(access.group.into()),
                resource: Some(resource.into()),
                subresource: subresource.map(Into::into),
                verb: Some(access.verb.into()),
                namespace: access.namespace.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn allowed(
    reviews: Api<SelfSubjectAccessReview>,
    review: SelfSubjectAccessReview,
) -> Result<bool, kube::Error> {
    let answer = reviews.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|status| status.allowed))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};

    use super::*;

    #[test]
    fn accesses_read_as_kubectl_auth_can_i_takes_them() {
        let status = Access {
            group: "shop.dev",
            resource: "shopservices/status",
            verb: "patch",
            namespace: None,
        };
        assert_eq!(status.to_string(), "patch shopservices.shop.dev/status");
        let secrets = Access {
            group: "",
            resource: "secrets",
            verb: "create",
            namespace: Some("shop".into()),
        };
        assert_eq!(secrets.to_string(), "create secrets");
    }

    #[test]
    fn leases_are_needed_only_with_leader_election_and_in_their_namespace() {
        let lease = |access: &Access| access.resource == "leases";
        assert!(!needed(Some("shop"), None).iter().any(lease));
        let with_election = needed(Some("shop"), Some("shop-system"));
        let leases: Vec<_> = with_election.iter().filter(|a| lease(a)).collect();
        assert_eq!(leases.len(), 3);
        assert!(
            leases
                .iter()
                .all(|a| a.namespace.as_deref() == Some("shop-system"))
        );
        assert!(
            with_election
                .iter()
                .filter(|a| !lease(a))
                .all(|a| a.namespace.as_deref() == Some("shop"))
        );
        assert!(needed(None, None).iter().all(|a| a.namespace.is_none()));
    }

    #[test]
    fn one_message_names_every_denial_by_namespace_and_the_manifest() {
        let access = |resource, verb, namespace: &str| Access {
            group: "",
            resource,
            verb,
            namespace: Some(namespace.into()),
        };
        let message = denial_message(&[
            access("secrets", "create", "shop"),
            access("secrets", "delete", "shop"),
            Access {
                group: "coordination.k8s.io",
                ..access("leases", "update", "shop-system")
            },
        ]);
        assert!(
            message.contains("missing 3 RBAC permission(s)"),
            "{message}"
        );
        assert!(
            message.contains("create secrets, delete secrets in namespace shop; update leases.coordination.k8s.io in namespace shop-system"),
            "{message}"
        );
        assert!(message.contains(RBAC_MANIFEST), "{message}");
        let everywhere = denial_message(&[Access {
            namespace: None,
            ..access("configmaps", "delete", "")
        }]);
        assert!(
            everywhere.contains("delete configmaps in every namespace"),
            "{everywhere}"
        );
    }

    /// Every kind a ShopService owns is applied (server-side: `create` and `patch`), watched
    /// (`list`, `watch`) and, when the prune may delete it, deleted; and every resource the
    /// operator watches besides its own ShopServices is an owned kind.
    #[test]
    fn the_permissions_cover_every_owned_kind_and_watch_nothing_else() {
        use crate::build::{OWNED_KINDS, Prune};
        let verbs_on = |group: &str, resource: &str| -> Vec<&'static str> {
            REQUIRED
                .iter()
                .filter(|p| p.scope == Scope::Watched)
                .filter(|p| p.group == group && p.resource == resource)
                .flat_map(|p| p.verbs.iter().copied())
                .collect()
        };
        for kind in &OWNED_KINDS {
            let granted = verbs_on(kind.group, kind.plural);
            let mut needed = vec!["list", "watch", "create", "patch"];
            if matches!(kind.prune, Prune::WhenNotApplied { .. }) {
                needed.push("delete");
            }
            for verb in needed {
                assert!(
                    granted.contains(&verb),
                    "REQUIRED lacks {verb} on {} ({:?})",
                    kind.plural,
                    kind.prune
                );
            }
        }
        for permission in REQUIRED.iter().filter(|p| p.verbs.contains(&"watch")) {
            let owned = OWNED_KINDS
                .iter()
                .any(|kind| (kind.group, kind.plural) == (permission.group, permission.resource));
            assert!(
                owned || permission.resource == "shopservices",
                "{} is watched but not an owned kind: add it to build::OWNED_KINDS",
                permission.resource
            );
        }
    }

    /// (group, resource, verb, scope) triples.
    type Grants = BTreeSet<(String, String, String, &'static str)>;

    fn scope_name(scope: Scope) -> &'static str {
        match scope {
            Scope::Watched => "the ClusterRole shop-operator",
            Scope::LeaderElection => "the Role shop-operator-leader-election",
        }
    }

    fn grants(rules: &[PolicyRule], scope: Scope, into: &mut Grants) {
        for rule in rules {
            assert!(
                rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
                "the operator's rules name no particular objects or URLs: {rule:?}"
            );
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        assert!(
                            ![group, resource, verb].contains(&&"*".to_owned()),
                            "no wildcards: {rule:?}"
                        );
                        into.insert((
                            group.clone(),
                            resource.clone(),
                            verb.clone(),
                            scope_name(scope),
                        ));
                    }
                }
            }
        }
    }

    /// The RBAC manifest grants exactly what [`REQUIRED`] lists: a missing rule would stop
    /// the operator at startup, an extra one is more power than it uses.
    #[test]
    fn the_rbac_manifest_grants_exactly_the_required_permissions() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(RBAC_MANIFEST);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
        let mut granted = Grants::new();
        for document in documents {
            match document["kind"].as_str() {
                Some("ClusterRole") if document["metadata"]["name"] == "shop-operator" => {
                    let role: ClusterRole = serde_json::from_value(document).unwrap();
                    grants(
                        &role.rules.unwrap_or_default(),
                        Scope::Watched,
                        &mut granted,
                    );
                }
                Some("Role") if document["metadata"]["name"] == "shop-operator-leader-election" => {
                    let role: Role = serde_json::from_value(document).unwrap();
                    grants(
                        &role.rules.unwrap_or_default(),
                        Scope::LeaderElection,
                        &mut granted,
                    );
                }
                _ => {}
            }
        }
        let required: Grants = REQUIRED
            .iter()
            .flat_map(|permission| {
                permission.verbs.iter().map(|verb| {
                    (
                        permission.group.to_owned(),
                        permission.resource.to_owned(),
                        (*verb).to_owned(),
                        scope_name(permission.scope),
                    )
                })
            })
            .collect();
        // The check itself: creating a SelfSubjectAccessReview is what asking takes, so it cannot
        // be in the list it checks.
        granted.remove(&(
            "authorization.k8s.io".to_owned(),
            "selfsubjectaccessreviews".to_owned(),
            "create".to_owned(),
            scope_name(Scope::Watched),
        ));
        let missing: Vec<_> = required.difference(&granted).collect();
        let extra: Vec<_> = granted.difference(&required).collect();
        assert!(
            missing.is_empty(),
            "{RBAC_MANIFEST} does not grant what the operator needs (group, resource, verb, where): {missing:#?}"
        );
        assert!(
            extra.is_empty(),
            "{RBAC_MANIFEST} grants more than controller/permissions.rs lists; remove it there or add it here with its reason: {extra:#?}"
        );
    }
}
