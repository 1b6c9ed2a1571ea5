//! A Dedicated database's volume grown to `spec.database.storage`. A StatefulSet makes its
//! claim once, from its template, and never changes it afterwards (the template itself is
//! brought up to date by recreating the StatefulSet, in `apply`), so growing the volume means
//! asking the claim for more; the storage provider (its CSI resizer, then the kubelet for the
//! file system) does the rest and reports the new capacity in the claim's status.
//!
//! The claim is not watched: it is read only while the ShopService's status does not yet show
//! a capacity of at least the requested size, so a settled database costs no request, and not
//! before the StatefulSet's controller has seen the StatefulSet (until then it made no claim).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::context::{Context, Error, Note};
use crate::build::Owner;
use crate::build::common::{MANAGER, names};

/// What became of the database's volume in this reconcile, for the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Not read: the status already shows a capacity of at least the requested size.
    Known,
    /// The claim is not bound yet and already asks for enough (or does not exist yet: the
    /// StatefulSet makes it from its template, at the requested size).
    Provisioning,
    /// Bound, with at least the requested size.
    Enough { capacity: String },
    /// Asked for `requested`; the storage provider has not finished growing it.
    Growing {
        capacity: Option<String>,
        requested: String,
    },
    /// The cluster cannot grow the claim; the database keeps working at its size.
    CannotGrow {
        reason: &'static str,
        capacity: Option<String>,
        message: String,
    },
}

impl Storage {
    /// The capacity to show in the status, when this reconcile read one.
    pub fn capacity(&self) -> Option<&str> {
        match self {
            Storage::Enough { capacity } => Some(capacity),
            Storage::Growing { capacity, .. } | Storage::CannotGrow { capacity, .. } => {
                capacity.as_deref()
            }
            Storage::Known | Storage::Provisioning => None,
        }
    }

    /// Whether something outside the operator is being waited for, so the next look comes
    /// sooner than the resync: the claim's status is not watched.
    pub fn waiting(&self) -> bool {
        matches!(self, Storage::Growing { .. } | Storage::CannotGrow { .. })
    }
}

/// What to do with a claim.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Ask for `requested` (the claim asks for less).
    Grow,
    Report(Storage),
}

/// Grows the claim of `owner`'s Dedicated database (whose StatefulSet, as applied or watched,
/// is `stateful_set`) to the requested size, unless the status says it has that already;
/// returns what the status should say.
pub async fn grow_claim(
    owner: &Owner<'_>,
    stateful_set: Option<&StatefulSet>,
    ctx: &Context,
    notes: &mut Vec<Note>,
) -> Result<Storage, Error> {
    let requested = &owner.spec().database.storage;
    if shown_capacity(owner).is_some_and(|shown| at_least(shown, &requested.0)) {
        return Ok(Storage::Known);
    }
    // Its controller has not seen the StatefulSet yet (just created, or created again), so it
    // has made no claim yet: one request less in the reconcile that creates a database. A
    // claim kept from an earlier StatefulSet of the same name is read by the next reconcile,
    // which the StatefulSet's first status triggers.
    let seen = stateful_set
        .and_then(|stateful_set| stateful_set.status.as_ref())
        .is_some_and(|status| status.observed_generation.is_some());
    if !seen {
        return Ok(Storage::Provisioning);
    }
    let name = names::database_claim(owner.name);
    let claims = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), owner.namespace);
    let Some(claim) = claims
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("read PersistentVolumeClaim {name}")))?
    else {
        return Ok(Storage::Provisioning);
    };
    match decide(&claim, requested) {
        Decision::Report(storage) => Ok(storage),
        Decision::Grow => {
            let patch = json!({"spec": {"resources": {"requests": {"storage": requested}}}});
            let params = PatchParams {
                field_manager: Some(MANAGER.into()),
                ..PatchParams::default()
            };
            match claims.patch(&name, &params, &Patch::Merge(&patch)).await {
                Ok(grown) => {
                    notes.push(Note::normal(
                        "ResizingStorage",
                        "Reconcile",
                        format!(
                            "asked PersistentVolumeClaim {name} to grow from {} to {}",
                            requested_of(&claim).unwrap_or("?"),
                            requested.0
                        ),
                    ));
                    Ok(match decide(&grown, requested) {
                        Decision::Report(storage) => storage,
                        // The API server answered with the old request: report it as asked.
                        Decision::Grow => Storage::Growing {
                            capacity: capacity_of(&grown).map(str::to_owned),
                            requested: requested.0.clone(),
                        },
                    })
                }
                Err(kube::Error::Api(status)) if refused_as_not_expandable(&status) => {
                    Ok(not_expandable(&name, &claim))
                }
                Err(error) => Err(Error::Kube {
                    action: format!("grow PersistentVolumeClaim {name} to {}", requested.0),
                    error,
                }),
            }
        }
    }
}

/// The capacity the ShopService's status shows, as the last reconcile that read the claim saw it.
pub fn shown_capacity<'a>(owner: &Owner<'a>) -> Option<&'a str> {
    owner
        .shop
        .status
        .as_ref()?
        .database
        .as_ref()?
        .capacity
        .as_deref()
}

/// The admission plugin `PersistentVolumeClaimResize`'s refusal: the claim's StorageClass
/// does not allow expansion, or the claim has none.
fn refused_as_not_expandable(status: &kube::core::Status) -> bool {
    status.code == 403 && status.message.contains("can be resized")
}

fn not_expandable(name: &str, claim: &PersistentVolumeClaim) -> Storage {
    let class = claim
        .spec
        .as_ref()
        .and_then(|spec| spec.storage_class_name.as_deref())
        .filter(|class| !class.is_empty());
    let capacity = capacity_of(claim).map(str::to_owned);
    let size = capacity.as_deref().or(requested_of(claim)).unwrap_or("?");
    let message = match class {
        Some(class) => format!(
            "PersistentVolumeClaim {name} cannot grow: its StorageClass {class} does not set allowVolumeExpansion: true. Set it if the class's provisioner can expand volumes; until then the database keeps working at {size}"
        ),
        None => format!(
            "PersistentVolumeClaim {name} cannot grow: it has no StorageClass (a volume made by hand), and Kubernetes grows only claims of a class with allowVolumeExpansion: true; the database keeps working at {size}"
        ),
    };
    Storage::CannotGrow {
        reason: "StorageNotExpandable",
        capacity,
        message,
    }
}

/// What to do with `claim` for a volume of `requested`. Pure.
fn decide(claim: &PersistentVolumeClaim, requested: &Quantity) -> Decision {
    let asks_enough = requested_of(claim).is_some_and(|asked| at_least(asked, &requested.0));
    let bound = claim
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        == Some("Bound");
    let capacity = capacity_of(claim);
    if !bound {
        // Only a bound claim's request can change; one that asks for enough is simply not
        // provisioned yet.
        return Decision::Report(if asks_enough {
            Storage::Provisioning
        } else {
            Storage::Growing {
                capacity: None,
                requested: requested.0.clone(),
            }
        });
    }
    if let Some(capacity) = capacity.filter(|capacity| at_least(capacity, &requested.0)) {
        return Decision::Report(Storage::Enough {
            capacity: capacity.to_owned(),
        });
    }
    if let Some(state) = infeasible(claim) {
        return Decision::Report(Storage::CannotGrow {
            reason: "StorageResizeFailed",
            capacity: capacity.map(str::to_owned),
            message: format!(
                "the storage provider cannot grow PersistentVolumeClaim {} to {}: {state}",
                claim.metadata.name.as_deref().unwrap_or_default(),
                requested.0
            ),
        });
    }
    if asks_enough {
        Decision::Report(Storage::Growing {
            capacity: capacity.map(str::to_owned),
            requested: requested.0.clone(),
        })
    } else {
        Decision::Grow
    }
}

/// A resize the provider gave up on (`ControllerResizeInfeasible`, `NodeResizeInfeasible`),
/// with the claim's condition message when it has one.
fn infeasible(claim: &PersistentVolumeClaim) -> Option<String> {
    let status = claim.status.as_ref()?;
    let state = status
        .allocated_resource_statuses
        .as_ref()?
        .get("storage")
        .filter(|state| state.ends_with("Infeasible"))?;
    let detail = status
        .conditions
        .iter()
        .flatten()
        .filter_map(|condition| condition.message.as_deref())
        .next_back();
    Some(match detail {
        Some(detail) => format!("{state}: {detail}"),
        None => state.clone(),
    })
}

fn requested_of(claim: &PersistentVolumeClaim) -> Option<&str> {
    let requests = claim.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?;
    Some(requests.get("storage")?.0.as_str())
}

fn capacity_of(claim: &PersistentVolumeClaim) -> Option<&str> {
    let capacity = claim.status.as_ref()?.capacity.as_ref()?;
    Some(capacity.get("storage")?.0.as_str())
}

/// Whether the quantity `have` is at least `want`; false when either is not a quantity.
fn at_least(have: &str, want: &str) -> bool {
    match (bytes(have), bytes(want)) {
        (Some(have), Some(want)) => have >= want,
        _ => false,
    }
}

/// The number of bytes a Kubernetes quantity such as `1Gi`, `500M`, `1.5Gi` or `2e9` stands
/// for. Storage sizes are far below 2^53 bytes, where an `f64` is exact for whole numbers.
pub fn bytes(quantity: &str) -> Option<f64> {
    let quantity = quantity.trim();
    let split = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exponent if exponent.starts_with(['e', 'E']) => 10f64.powi(exponent[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * multiplier)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaimCondition, PersistentVolumeClaimSpec, PersistentVolumeClaimStatus,
        VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn claim(asked: &str, phase: &str, capacity: Option<&str>) -> PersistentVolumeClaim {
        let storage = |size: &str| BTreeMap::from([("storage".to_owned(), Quantity(size.into()))]);
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data-order-db-0".into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: Some("fast".into()),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(storage(asked)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(PersistentVolumeClaimStatus {
                phase: Some(phase.into()),
                capacity: capacity.map(storage),
                ..Default::default()
            }),
        }
    }

    fn want(size: &str) -> Quantity {
        Quantity(size.into())
    }

    #[test]
    fn quantities_are_read_in_bytes() {
        assert_eq!(bytes("1Gi"), Some(1073741824.0));
        assert_eq!(bytes("1.5Gi"), Some(1610612736.0));
        assert_eq!(bytes("500M"), Some(5e8));
        assert_eq!(bytes("2e9"), Some(2e9));
        assert_eq!(bytes("1024"), Some(1024.0));
        assert_eq!(bytes("1Gb"), None);
        assert_eq!(bytes("Gi"), None);
        assert!(at_least("1024Mi", "1Gi") && at_least("1Gi", "1024Mi"));
        assert!(at_least("1Gi", "1G") && !at_least("1G", "1Gi"));
        assert!(!at_least("garbage", "1Gi"));
    }

    #[test]
    fn a_bound_claim_that_asks_for_less_is_grown() {
        assert_eq!(
            decide(&claim("1Gi", "Bound", Some("1Gi")), &want("2Gi")),
            Decision::Grow
        );
    }

    #[test]
    fn a_claim_with_enough_capacity_is_left_alone() {
        // A volume bigger than asked for (a static volume, a provider's rounding) is enough.
        for (asked, capacity) in [("2Gi", "2Gi"), ("1Gi", "10Gi"), ("1Gi", "2048Mi")] {
            assert_eq!(
                decide(&claim(asked, "Bound", Some(capacity)), &want("2Gi")),
                Decision::Report(Storage::Enough {
                    capacity: capacity.into()
                }),
                "{asked} with {capacity}"
            );
        }
    }

    #[test]
    fn a_claim_asked_to_grow_is_growing_until_its_capacity_follows() {
        assert_eq!(
            decide(&claim("2Gi", "Bound", Some("1Gi")), &want("2Gi")),
            Decision::Report(Storage::Growing {
                capacity: Some("1Gi".into()),
                requested: "2Gi".into()
            })
        );
    }

    #[test]
    fn an_unbound_claim_is_never_patched() {
        assert_eq!(
            decide(&claim("2Gi", "Pending", None), &want("2Gi")),
            Decision::Report(Storage::Provisioning)
        );
        assert_eq!(
            decide(&claim("1Gi", "Pending", None), &want("2Gi")),
            Decision::Report(Storage::Growing {
                capacity: None,
                requested: "2Gi".into()
            })
        );
    }

    #[test]
    fn a_resize_the_provider_gave_up_on_is_reported_with_its_reason() {
        let mut failed = claim("2Gi", "Bound", Some("1Gi"));
        let status = failed.status.as_mut().unwrap();
        status.allocated_resource_statuses = Some(BTreeMap::from([(
            "storage".to_owned(),
            "ControllerResizeInfeasible".to_owned(),
        )]));
        status.conditions = Some(vec![PersistentVolumeClaimCondition {
            type_: "ControllerResizeError".into(),
            status: "True".into(),
            message: Some("disk quota exceeded".into()),
            ..Default::default()
        }]);
        let Decision::Report(Storage::CannotGrow {
            reason, message, ..
        }) = decide(&failed, &want("2Gi"))
        else {
            panic!("not reported as failed");
        };
        assert_eq!(reason, "StorageResizeFailed");
        assert!(
            message.contains("ControllerResizeInfeasible: disk quota exceeded"),
            "{message}"
        );
    }

    #[test]
    fn a_class_without_expansion_is_named_with_what_to_change() {
        let Storage::CannotGrow {
            reason,
            capacity,
            message,
        } = not_expandable("data-order-db-0", &claim("1Gi", "Bound", Some("1Gi")))
        else {
            panic!("not reported as not expandable");
        };
        assert_eq!(reason, "StorageNotExpandable");
        assert_eq!(capacity.as_deref(), Some("1Gi"));
        assert!(
            message.contains("StorageClass fast does not set allowVolumeExpansion: true"),
            "{message}"
        );
        let mut classless = claim("1Gi", "Bound", Some("1Gi"));
        classless.spec.as_mut().unwrap().storage_class_name = Some(String::new());
        let Storage::CannotGrow { message, .. } = not_expandable("data-order-db-0", &classless)
        else {
            panic!("not reported as not expandable");
        };
        assert!(message.contains("it has no StorageClass"), "{message}");
    }
}
