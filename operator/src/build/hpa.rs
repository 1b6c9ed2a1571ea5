//! The HorizontalPodAutoscaler `<name>` (autoscaling/v2), when `spec.autoscaling` is set.
//!
//! It scales the Deployment on CPU use relative to `resources.requests.cpu`. While it exists
//! it owns the Deployment's replica count, which is why the Deployment builder leaves
//! `spec.replicas` out then.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};

use super::Owner;
use super::common::Role;

pub fn horizontal_pod_autoscaler(owner: &Owner) -> Option<HorizontalPodAutoscaler> {
    let autoscaling = owner.spec().autoscaling.as_ref()?;
    Some(HorizontalPodAutoscaler {
        metadata: owner.metadata(owner.name, Role::Server),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: owner.name.into(),
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(autoscaling.target_cpu_utilization_percentage),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            ..Default::default()
        },
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::shop;
    use crate::crd::{Autoscaling, Component};

    #[test]
    fn none_without_autoscaling() {
        let cart = shop("cart", Some(Component::Cart));
        assert_eq!(horizontal_pod_autoscaler(&Owner::new(&cart).unwrap()), None);
    }

    #[test]
    fn scales_the_deployment_on_cpu_within_the_bounds() {
        let mut cart = shop("cart", Some(Component::Cart));
        cart.spec.autoscaling = Some(Autoscaling {
            min_replicas: 2,
            max_replicas: 7,
            target_cpu_utilization_percentage: 65,
        });
        let hpa = horizontal_pod_autoscaler(&Owner::new(&cart).unwrap()).unwrap();
        let spec = hpa.spec;
        assert_eq!(spec.scale_target_ref.kind, "Deployment");
        assert_eq!(spec.scale_target_ref.name, "cart");
        assert_eq!(
            spec.scale_target_ref.api_version.as_deref(),
            Some("apps/v1")
        );
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 7));
        let metric = spec.metrics.unwrap().remove(0).resource.unwrap();
        assert_eq!(metric.name, "cpu");
        assert_eq!(metric.target.type_, "Utilization");
        assert_eq!(metric.target.average_utilization, Some(65));
    }
}
