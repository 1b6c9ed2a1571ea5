//! The Service `<name>`: the stable address (`<name>.<namespace>.svc:<port>`) of the
//! service's ready pods.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Owner;
use super::common::Role;
use super::deployment::HTTP_PORT_NAME;

pub fn service(owner: &Owner) -> Service {
    Service {
        metadata: owner.metadata(owner.name, Role::Server),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(owner.selector_labels(Role::Server)),
            ports: Some(vec![ServicePort {
                name: Some(HTTP_PORT_NAME.into()),
                protocol: Some("TCP".into()),
                app_protocol: Some("http".into()),
                port: owner.spec().port,
                target_port: Some(IntOrString::String(HTTP_PORT_NAME.into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::shop;
    use crate::crd::Component;

    #[test]
    fn exposes_the_port_of_the_spec_and_selects_the_server_pods() {
        let mut catalog = shop("catalog", Some(Component::Catalog));
        catalog.spec.port = 9000;
        let service = service(&Owner::new(&catalog).unwrap());
        let spec = service.spec.unwrap();
        let port = &spec.ports.unwrap()[0];
        assert_eq!(port.port, 9000);
        assert_eq!(port.target_port, Some(IntOrString::String("http".into())));
        let selector = spec.selector.unwrap();
        assert_eq!(selector["app.kubernetes.io/instance"], "catalog");
        assert_eq!(selector["app.kubernetes.io/component"], "server");
    }
}
