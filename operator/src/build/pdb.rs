//! The PodDisruptionBudget `<name>`, when the service runs more than one pod.
//!
//! Voluntary disruptions (node drains, cluster upgrades) then take at most one pod at a
//! time. With a single pod there is no budget: it would block every drain forever.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Owner;
use super::common::Role;

pub fn pod_disruption_budget(owner: &Owner) -> Option<PodDisruptionBudget> {
    let spec = owner.spec();
    // With autoscaling the count moves between min and max; only min is guaranteed.
    let fewest_pods = match &spec.autoscaling {
        Some(autoscaling) => autoscaling.min_replicas,
        None => spec.replicas,
    };
    if fewest_pods <= 1 {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: owner.metadata(owner.name, Role::Server),
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(owner.label_selector(Role::Server)),
            max_unavailable: Some(IntOrString::Int(1)),
            // A pod that is not ready serves nothing; letting it be evicted cannot hurt, and
            // keeps a crash-looping pod from blocking a node drain.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::shop;
    use crate::crd::{Autoscaling, Component};

    fn with_replicas(replicas: i32, autoscaling_min: Option<i32>) -> Option<PodDisruptionBudget> {
        let mut cart = shop("cart", Some(Component::Cart));
        cart.spec.replicas = replicas;
        cart.spec.autoscaling = autoscaling_min.map(|min_replicas| Autoscaling {
            min_replicas,
            max_replicas: 10,
            target_cpu_utilization_percentage: 80,
        });
        pod_disruption_budget(&Owner::new(&cart).unwrap())
    }

    #[test]
    fn only_with_more_than_one_pod() {
        assert!(with_replicas(0, None).is_none());
        assert!(with_replicas(1, None).is_none());
        assert!(with_replicas(2, None).is_some());
    }

    #[test]
    fn with_autoscaling_the_minimum_decides_and_replicas_is_ignored() {
        assert!(with_replicas(5, Some(1)).is_none());
        assert!(with_replicas(1, Some(2)).is_some());
    }

    #[test]
    fn allows_one_pod_down_at_a_time() {
        let spec = with_replicas(3, None).unwrap().spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.min_available, None);
        let selector = spec.selector.unwrap().match_labels.unwrap();
        assert_eq!(selector["app.kubernetes.io/instance"], "cart");
    }
}
