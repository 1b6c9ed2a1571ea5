//! The Deployment `<name>`: the service's pods.
//!
//! One container runs `shop serve <component>` (or the custom image's own entrypoint), an
//! init container runs `shop migrate <component>` first when there is a database, and the
//! pod meets the `restricted` Pod Security Standard with a read-only root filesystem.

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    KeyToPath, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SecretKeySelector,
    SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use shop_contracts::{ServiceName, env as vars};

use super::common::{
    Role, SHOP_USER_ID, TMP_DIR, TMP_SIZE_LIMIT, empty_dir_volume, names,
    restricted_container_security_context, restricted_pod_security_context,
    spread_over_nodes_and_zones, volume_mount, with_ephemeral_storage,
};
use super::{Context, Owner, database, routes};
use crate::crd::{Component, ComputeResources, DEFAULT_PORT, DatabaseMode};

/// The name of the container port, which the Service and the probes refer to.
pub const HTTP_PORT_NAME: &str = "http";

/// After SIGTERM a service stays up this long, answering unready, so that endpoints and
/// load balancers stop sending it traffic before it stops accepting.
const SHUTDOWN_DELAY_MS: u32 = 5000;

/// Covers the shutdown delay (5 s) plus the services' grace for in-flight requests (20 s,
/// `SHOP_SHUTDOWN_GRACE_SECS`), with room to spare before the kubelet kills the pod.
const TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;

/// Where the gateway's route table ConfigMap is mounted. As a directory, not a `subPath`:
/// the kubelet updates a ConfigMap volume in place (the gateway re-reads the file), but never
/// a file mounted by `subPath`.
const ROUTES_DIR: &str = "/etc/shop/routes";

const TMP_VOLUME: &str = "tmp";
const ROUTES_VOLUME: &str = "routes";
const DATABASE_CA_VOLUME: &str = "database-ca";

pub fn deployment(owner: &Owner, context: &Context) -> Deployment {
    let spec = owner.spec();
    let labels = owner.labels(Role::Server);
    Deployment {
        metadata: owner.metadata(owner.name, Role::Server),
        spec: Some(DeploymentSpec {
            // While an autoscaler exists it owns the count; writing it here would fight it
            // on every reconcile.
            replicas: spec.autoscaling.is_none().then_some(spec.replicas),
            selector: owner.label_selector(Role::Server),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(spec.rollout.max_surge.clone()),
                    max_unavailable: Some(spec.rollout.max_unavailable.clone()),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(pod_spec(owner, context)),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_spec(owner: &Owner, context: &Context) -> PodSpec {
    let spec = owner.spec();
    let image = spec.image.as_deref().unwrap_or(context.default_image);
    let env = environment(owner, context);
    let mut volumes = vec![empty_dir_volume(TMP_VOLUME, TMP_SIZE_LIMIT)];
    let mut mounts = vec![volume_mount(TMP_VOLUME, TMP_DIR)];
    if spec.component == Some(Component::Gateway) {
        volumes.push(Volume {
            name: ROUTES_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::route_table(owner.name),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            read_only: Some(true),
            ..volume_mount(ROUTES_VOLUME, ROUTES_DIR)
        });
    }
    if spec.database.mode == DatabaseMode::Shared {
        // The shared server's CA certificate, when its Secret gives one: the database URI
        // names it (`sslrootcert`) for sslmode verify-ca and verify-full.
        volumes.push(Volume {
            name: DATABASE_CA_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names::credentials_secret(owner.name)),
                items: Some(vec![KeyToPath {
                    key: database::CA_KEY.into(),
                    path: database::CA_KEY.into(),
                    ..Default::default()
                }]),
                optional: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            read_only: Some(true),
            ..volume_mount(DATABASE_CA_VOLUME, database::CA_DIR)
        });
    }

    let container = |name: &str, args: Option<Vec<String>>| Container {
        name: name.into(),
        image: Some(image.into()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().into()),
        args,
        env: Some(env.clone()),
        resources: Some(with_ephemeral_storage(resource_requirements(
            &spec.resources,
        ))),
        security_context: Some(restricted_container_security_context()),
        volume_mounts: Some(mounts.clone()),
        ..Default::default()
    };
    // A custom workload without a component runs its image's own entrypoint.
    let serve_args = spec
        .component
        .map(|component| vec!["serve".to_owned(), component.as_str().to_owned()]);
    let app = Container {
        ports: Some(vec![ContainerPort {
            name: Some(HTTP_PORT_NAME.into()),
            container_port: spec.port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        readiness_probe: Some(http_probe("/readyz", 5, 2)),
        ..container("app", serve_args)
    };
    // The schema is migrated before the new version starts: `shop migrate` is idempotent,
    // and a pod that cannot migrate never becomes ready, so the old pods keep serving. Only
    // bundled components have a known migrate command.
    let migrate = match (spec.database.mode, spec.component) {
        (DatabaseMode::None, _) | (_, None) => None,
        (_, Some(component)) => Some(container(
            "migrate",
            Some(vec!["migrate".to_owned(), component.as_str().to_owned()]),
        )),
    };

    PodSpec {
        service_account_name: Some(owner.name.into()),
        automount_service_account_token: Some(false),
        // Service links would put `<SERVICE>_PORT=tcp://…` variables of every Service in the
        // namespace into the environment; the services are configured explicitly instead.
        enable_service_links: Some(false),
        security_context: Some(restricted_pod_security_context(SHOP_USER_ID)),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_PERIOD_SECONDS),
        init_containers: migrate.map(|migrate| vec![migrate]),
        containers: vec![app],
        volumes: Some(volumes),
        topology_spread_constraints: Some(spread_over_nodes_and_zones(
            &owner.label_selector(Role::Server),
        )),
        ..Default::default()
    }
}

/// The service's environment: the operator's variables, then the user's `env`. Every name
/// appears once: a later variable replaces an earlier one of the same name (the user's
/// `SHOP_LOG_FORMAT` the operator's, the gateway's `USER_URL` one from `dependsOn`).
fn environment(owner: &Owner, context: &Context) -> Vec<EnvVar> {
    let spec = owner.spec();
    let mut env = vec![
        value(vars::LISTEN, format!("0.0.0.0:{}", spec.port)),
        value(vars::LOG_FORMAT, "json"),
        value(vars::SHUTDOWN_DELAY_MS, SHUTDOWN_DELAY_MS.to_string()),
    ];
    if spec.database.mode != DatabaseMode::None {
        // From the Secret, never inline: the password must not be readable in the
        // Deployment by whoever may read Deployments.
        env.push(EnvVar {
            name: vars::DATABASE_URL.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: names::credentials_secret(owner.name),
                    key: "uri".into(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    // The namespace's key for the services' tokens on each other's internal APIs.
    env.push(EnvVar {
        name: vars::SERVICE_KEY.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: names::SERVICE_KEY_SECRET.into(),
                key: names::SERVICE_KEY_ENTRY.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    for dependency in &spec.depends_on {
        let name = dependency.as_str();
        set(
            &mut env,
            value(
                &shop_contracts::env::peer_url(name),
                names::service_url(name, owner.namespace, context.port_of(name)),
            ),
        );
    }
    if spec.component == Some(Component::Gateway) {
        env.push(value(
            vars::ROUTES_FILE,
            format!("{ROUTES_DIR}/{}", routes::ROUTE_TABLE_KEY),
        ));
        // The gateway fetches the user service's public keys (JWKS) to verify tokens. Until
        // a user service exists, it is looked for under the conventional name and port.
        let (user, port) = context
            .user_service()
            .unwrap_or((ServiceName::User.as_str(), DEFAULT_PORT));
        set(
            &mut env,
            value(
                &ServiceName::User.url_var(),
                names::service_url(user, owner.namespace, port),
            ),
        );
    }
    for variable in &spec.env {
        set(&mut env, value(&variable.name, variable.value.clone()));
    }
    env
}

fn value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// Sets `variable`, replacing one of the same name.
fn set(env: &mut Vec<EnvVar>, variable: EnvVar) {
    match env
        .iter_mut()
        .find(|existing| existing.name == variable.name)
    {
        Some(existing) => *existing = variable,
        None => env.push(variable),
    }
}

fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(HTTP_PORT_NAME.into()),
            ..Default::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

fn resource_requirements(resources: &ComputeResources) -> ResourceRequirements {
    let mut limits =
        std::collections::BTreeMap::from([("memory".to_owned(), resources.limits.memory.clone())]);
    if let Some(cpu) = &resources.limits.cpu {
        limits.insert("cpu".into(), cpu.clone());
    }
    let requests: std::collections::BTreeMap<String, Quantity> = [
        ("cpu".to_owned(), resources.requests.cpu.clone()),
        ("memory".to_owned(), resources.requests.memory.clone()),
    ]
    .into();
    ResourceRequirements {
        limits: Some(limits),
        requests: Some(requests),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{IMAGE, context, routed, shop};
    use crate::crd::{Autoscaling, ServiceName};

    fn build(shop: &crate::crd::ShopService, services: &[crate::crd::ShopService]) -> Deployment {
        deployment(&Owner::new(shop).unwrap(), &context(services, None))
    }

    fn pod(deployment: &Deployment) -> &PodSpec {
        deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
    }

    fn env_of(container: &Container) -> Vec<(String, Option<String>)> {
        container
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect()
    }

    fn env_value<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
        container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_deref())
    }

    #[test]
    fn defaults_run_one_pod_of_the_shop_image_serving_its_component() {
        let cart = shop("cart", Some(Component::Cart));
        let built = build(&cart, &[]);
        let spec = built.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        let pod = pod(&built);
        assert_eq!(pod.containers.len(), 1);
        let app = &pod.containers[0];
        assert_eq!(app.image.as_deref(), Some(IMAGE));
        assert_eq!(
            app.args.as_deref(),
            Some(&["serve".into(), "cart".into()][..])
        );
        assert_eq!(app.image_pull_policy, None);
        assert_eq!(app.ports.as_ref().unwrap()[0].container_port, 8080);
        assert_eq!(
            env_of(app),
            [
                ("SHOP_LISTEN".into(), Some("0.0.0.0:8080".into())),
                ("SHOP_LOG_FORMAT".into(), Some("json".into())),
                ("SHOP_SHUTDOWN_DELAY_MS".into(), Some("5000".into())),
                // From the Secret shop-service-key, as the test below checks.
                ("SHOP_SERVICE_KEY".into(), None),
            ]
        );
        assert!(pod.init_containers.is_none(), "no database, no migration");
        let key = app
            .env
            .iter()
            .flatten()
            .find(|variable| variable.name == "SHOP_SERVICE_KEY")
            .and_then(|variable| variable.value_from.as_ref()?.secret_key_ref.as_ref())
            .expect("the service key from a Secret, never inline");
        assert_eq!(
            (key.name.as_str(), key.key.as_str()),
            ("shop-service-key", "key")
        );
        assert_eq!(pod.termination_grace_period_seconds, Some(30));
        assert_eq!(pod.service_account_name.as_deref(), Some("cart"));
        let resources = app.resources.as_ref().unwrap();
        assert_eq!(
            resources.requests.as_ref().unwrap()["cpu"],
            Quantity("50m".into())
        );
        assert_eq!(
            resources.limits.as_ref().unwrap()["memory"],
            Quantity("256Mi".into())
        );
        assert!(!resources.limits.as_ref().unwrap().contains_key("cpu"));
    }

    #[test]
    fn selector_is_a_subset_of_the_pod_labels() {
        let cart = shop("cart", Some(Component::Cart));
        let built = build(&cart, &[]);
        let spec = built.spec.as_ref().unwrap();
        let selector = spec.selector.match_labels.as_ref().unwrap();
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        for (key, value) in selector {
            assert_eq!(pod_labels.get(key), Some(value), "{key}");
        }
        assert_eq!(pod_labels["app.kubernetes.io/name"], "cart");
    }

    #[test]
    fn with_autoscaling_replicas_are_left_to_the_autoscaler() {
        let mut cart = shop("cart", Some(Component::Cart));
        cart.spec.replicas = 3;
        assert_eq!(build(&cart, &[]).spec.unwrap().replicas, Some(3));
        cart.spec.autoscaling = Some(Autoscaling {
            min_replicas: 2,
            max_replicas: 4,
            target_cpu_utilization_percentage: 80,
        });
        assert_eq!(build(&cart, &[]).spec.unwrap().replicas, None);
    }

    #[test]
    fn zero_replicas_are_written_as_zero() {
        let mut cart = shop("cart", Some(Component::Cart));
        cart.spec.replicas = 0;
        assert_eq!(build(&cart, &[]).spec.unwrap().replicas, Some(0));
    }

    #[test]
    fn rollout_comes_from_the_spec() {
        let mut cart = shop("cart", Some(Component::Cart));
        cart.spec.rollout.max_surge = IntOrString::Int(2);
        cart.spec.rollout.max_unavailable = IntOrString::String("10%".into());
        let strategy = build(&cart, &[]).spec.unwrap().strategy.unwrap();
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
        let rolling = strategy.rolling_update.unwrap();
        assert_eq!(rolling.max_surge, Some(IntOrString::Int(2)));
        assert_eq!(
            rolling.max_unavailable,
            Some(IntOrString::String("10%".into()))
        );
    }

    #[test]
    fn pods_meet_the_restricted_standard_with_a_read_only_root() {
        let mut cart = shop("cart", Some(Component::Cart));
        cart.spec.database.mode = DatabaseMode::Dedicated;
        let built = build(&cart, &[]);
        let pod = pod(&built);
        assert_eq!(pod.automount_service_account_token, Some(false));
        let pod_security = pod.security_context.as_ref().unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(pod_security.run_as_user, Some(65532));
        assert_eq!(
            pod_security.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        let containers = pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten());
        let mut checked = 0;
        for container in containers {
            let security = container.security_context.as_ref().unwrap();
            assert_eq!(
                security.allow_privilege_escalation,
                Some(false),
                "{}",
                container.name
            );
            assert_eq!(
                security.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_owned()][..])
            );
            assert_eq!(security.read_only_root_filesystem, Some(true));
            let tmp = container
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| m.mount_path == "/tmp");
            assert_eq!(
                tmp.unwrap().name,
                "tmp",
                "{} can write to /tmp",
                container.name
            );
            let resources = container.resources.as_ref().unwrap();
            assert_eq!(
                resources.limits.as_ref().unwrap()["ephemeral-storage"],
                Quantity("256Mi".into()),
                "{} is limited in the node's disk it uses",
                container.name
            );
            assert!(resources.requests.as_ref().unwrap()["ephemeral-storage"].0 == "64Mi");
            checked += 1;
        }
        assert_eq!(checked, 2, "the app and the migration");
        let tmp = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "tmp")
            .unwrap();
        assert_eq!(
            tmp.empty_dir.as_ref().unwrap().size_limit,
            Some(Quantity("64Mi".into()))
        );
    }

    #[test]
    fn replicas_are_spread_softly_over_nodes_and_zones() {
        let mut cart = shop("cart", Some(Component::Cart));
        cart.spec.replicas = 3;
        let built = build(&cart, &[]);
        let selector = built.spec.as_ref().unwrap().selector.clone();
        let constraints = pod(&built).topology_spread_constraints.clone().unwrap();
        let keys: Vec<_> = constraints
            .iter()
            .map(|c| c.topology_key.as_str())
            .collect();
        assert_eq!(
            keys,
            ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
        );
        for constraint in &constraints {
            assert_eq!(constraint.max_skew, 1);
            assert_eq!(
                constraint.when_unsatisfiable, "ScheduleAnyway",
                "a one-node cluster still runs every replica"
            );
            assert_eq!(constraint.label_selector.as_ref(), Some(&selector));
            assert_eq!(
                constraint.match_label_keys.as_deref(),
                Some(&["pod-template-hash".to_owned()][..]),
                "each revision is spread on its own during a rollout"
            );
        }
    }

    #[test]
    fn probes_are_healthz_and_readyz_on_the_service_port() {
        let cart = shop("cart", Some(Component::Cart));
        let built = build(&cart, &[]);
        let app = &pod(&built).containers[0];
        let path = |probe: &Option<Probe>| {
            let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
            assert_eq!(get.port, IntOrString::String("http".into()));
            get.path.clone().unwrap()
        };
        assert_eq!(path(&app.liveness_probe), "/healthz");
        assert_eq!(path(&app.readiness_probe), "/readyz");
    }

    #[test]
    fn database_url_comes_from_the_secret_and_a_migration_runs_first() {
        for mode in [DatabaseMode::Dedicated, DatabaseMode::Shared] {
            database_url_from_the_secret_with_a_migration(mode);
        }
    }

    fn database_url_from_the_secret_with_a_migration(mode: DatabaseMode) {
        let mut order = shop("order", Some(Component::Order));
        order.spec.database.mode = mode;
        let built = build(&order, &[]);
        let pod = pod(&built);
        let migrate = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(
            migrate.args.as_deref(),
            Some(&["migrate".into(), "order".into()][..])
        );
        for container in [&pod.containers[0], migrate] {
            let url = container
                .env
                .iter()
                .flatten()
                .find(|e| e.name == "DATABASE_URL")
                .unwrap();
            assert_eq!(url.value, None, "never inline");
            let secret = url
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap();
            assert_eq!(secret.name, "order-db-credentials");
            assert_eq!(secret.key, "uri");
            // A Shared server's CA certificate, where the URI's sslrootcert names it.
            let ca_mount = container
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| m.name == DATABASE_CA_VOLUME);
            assert_eq!(
                ca_mount.map(|m| (m.mount_path.as_str(), m.read_only)),
                (mode == DatabaseMode::Shared).then_some((database::CA_DIR, Some(true))),
                "{mode:?}"
            );
        }
        let ca_volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == DATABASE_CA_VOLUME);
        if let Some(volume) = ca_volume {
            let secret = volume.secret.as_ref().unwrap();
            assert_eq!(secret.secret_name.as_deref(), Some("order-db-credentials"));
            assert_eq!(
                secret.optional,
                Some(true),
                "a server without a CA mounts nothing"
            );
            assert_eq!(secret.items.as_ref().unwrap()[0].key, database::CA_KEY);
        }
        assert_eq!(ca_volume.is_some(), mode == DatabaseMode::Shared);
    }

    #[test]
    fn a_custom_workload_runs_its_own_entrypoint_without_migration() {
        let mut custom = shop("recommender", None);
        custom.spec.image = Some("example.com/recommender:2".into());
        custom.spec.database.mode = DatabaseMode::Dedicated;
        let built = build(&custom, &[]);
        let pod = pod(&built);
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("example.com/recommender:2")
        );
        assert_eq!(pod.containers[0].args, None);
        assert!(pod.init_containers.is_none());
        let labels = built.metadata.labels.unwrap();
        assert_eq!(labels["app.kubernetes.io/name"], "recommender");
    }

    #[test]
    fn each_dependency_becomes_a_url_variable_with_its_port() {
        let mut order = shop("order", Some(Component::Order));
        order.spec.depends_on = vec![
            ServiceName::from("cart"),
            ServiceName::from("order-history"),
        ];
        let mut cart = shop("cart", Some(Component::Cart));
        cart.spec.port = 9090;
        let built = build(&order, &[order.clone(), cart]);
        let app = &pod(&built).containers[0];
        assert_eq!(
            env_value(app, "CART_URL"),
            Some("http://cart.shop.svc:9090")
        );
        // Not created yet: the default port, so the service finds it once it exists.
        assert_eq!(
            env_value(app, "ORDER_HISTORY_URL"),
            Some("http://order-history.shop.svc:8080")
        );
    }

    #[test]
    fn the_users_env_comes_last_and_replaces_variables_of_the_same_name() {
        let mut cart = shop("cart", Some(Component::Cart));
        cart.spec.env = vec![
            crate::crd::EnvVar {
                name: "SHOP_LOG_FORMAT".into(),
                value: "text".into(),
            },
            crate::crd::EnvVar {
                name: "SHOP_ADMIN_EMAILS".into(),
                value: "ops@example.com".into(),
            },
        ];
        let built = build(&cart, &[]);
        let env = env_of(&pod(&built).containers[0]);
        let formats: Vec<_> = env.iter().filter(|(n, _)| n == "SHOP_LOG_FORMAT").collect();
        assert_eq!(formats, [&("SHOP_LOG_FORMAT".into(), Some("text".into()))]);
        assert_eq!(
            env.last(),
            Some(&("SHOP_ADMIN_EMAILS".into(), Some("ops@example.com".into())))
        );
    }

    #[test]
    fn the_gateway_reads_its_route_table_and_finds_the_user_service() {
        let gateway = shop("gateway", Some(Component::Gateway));
        let mut accounts = routed("accounts", Component::User, "/api/users");
        accounts.spec.port = 8081;
        let built = build(&gateway, &[gateway.clone(), accounts]);
        let pod = pod(&built);
        let app = &pod.containers[0];
        assert_eq!(
            env_value(app, "SHOP_ROUTES_FILE"),
            Some("/etc/shop/routes/routes.json")
        );
        assert_eq!(
            env_value(app, "USER_URL"),
            Some("http://accounts.shop.svc:8081")
        );
        let mount = app
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == "/etc/shop/routes")
            .unwrap();
        assert_eq!(mount.sub_path, None, "a subPath mount never sees updates");
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .unwrap();
        assert_eq!(volume.config_map.as_ref().unwrap().name, "gateway-routes");
    }

    #[test]
    fn without_a_user_service_the_gateway_looks_for_the_conventional_one() {
        let gateway = shop("gateway", Some(Component::Gateway));
        let built = build(&gateway, std::slice::from_ref(&gateway));
        let app = &pod(&built).containers[0];
        assert_eq!(
            env_value(app, "USER_URL"),
            Some("http://user.shop.svc:8080")
        );
    }

    #[test]
    fn the_storefront_finds_the_gateway_and_has_no_database() {
        let mut storefront = routed("storefront", Component::Storefront, "/");
        storefront.spec.depends_on = vec![ServiceName::from("gateway")];
        let mut gateway = shop("gateway", Some(Component::Gateway));
        gateway.spec.port = 8090;
        let built = build(&storefront, &[storefront.clone(), gateway]);
        let pod = pod(&built);
        assert!(pod.init_containers.is_none(), "no database, no migration");
        let app = &pod.containers[0];
        assert_eq!(
            app.args.as_deref(),
            Some(&["serve".into(), "storefront".into()][..])
        );
        assert_eq!(
            env_of(app),
            [
                ("SHOP_LISTEN".into(), Some("0.0.0.0:8080".into())),
                ("SHOP_LOG_FORMAT".into(), Some("json".into())),
                ("SHOP_SHUTDOWN_DELAY_MS".into(), Some("5000".into())),
                // From the Secret shop-service-key, as the test below checks.
                ("SHOP_SERVICE_KEY".into(), None),
                (
                    "GATEWAY_URL".into(),
                    Some("http://gateway.shop.svc:8090".into())
                ),
            ],
            "no DATABASE_URL, no route table"
        );
        let security = app.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.run_as_non_root, Some(true));
        let volumes: Vec<_> = pod.volumes.iter().flatten().map(|v| &v.name).collect();
        assert_eq!(volumes, ["tmp"], "only its scratch space");
    }

    #[test]
    fn only_the_gateway_gets_the_route_table() {
        let cart = shop("cart", Some(Component::Cart));
        let built = build(&cart, &[]);
        let app = &pod(&built).containers[0];
        assert_eq!(env_value(app, "SHOP_ROUTES_FILE"), None);
        assert_eq!(env_value(app, "USER_URL"), None);
    }
}
