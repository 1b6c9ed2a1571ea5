//! The ServiceAccount `<name>` the service's pods run as.
//!
//! The services never call the Kubernetes API, so no token is mounted: a compromised pod
//! then has no credentials to use against the cluster.

use k8s_openapi::api::core::v1::ServiceAccount;

use super::Owner;
use super::common::Role;

pub fn service_account(owner: &Owner) -> ServiceAccount {
    ServiceAccount {
        metadata: owner.metadata(owner.name, Role::Server),
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::shop;
    use crate::crd::Component;

    #[test]
    fn mounts_no_token() {
        let cart = shop("cart", Some(Component::Cart));
        let account = service_account(&Owner::new(&cart).unwrap());
        assert_eq!(account.metadata.name.as_deref(), Some("cart"));
        assert_eq!(account.automount_service_account_token, Some(false));
    }
}
