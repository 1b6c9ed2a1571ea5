//! The files checked in beside the operator agree with it: the CRD in `crds/` is the one the
//! code generates, and every example is a valid ShopService.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shop_operator::crd::ShopService;

fn repository_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn the_checked_in_crd_is_the_generated_one() {
    let checked_in = read(&repository_file("crds/shopservices.shop.dev.yaml"));
    let generated = shop_operator::crd_yaml().unwrap();
    assert!(
        checked_in == generated,
        "crds/shopservices.shop.dev.yaml is stale; regenerate it with\n\
         cargo run -p shop-operator -- crd > crds/shopservices.shop.dev.yaml"
    );
}

/// Every bundled service: a new one fails these tests until it has its example.
fn services() -> impl Iterator<Item = &'static str> {
    shop_contracts::ServiceName::ALL
        .into_iter()
        .map(shop_contracts::ServiceName::as_str)
}

fn shop_services(path: &Path) -> Vec<ShopService> {
    serde_saphyr::from_multiple(&read(path))
        .unwrap_or_else(|e| panic!("{} is not a list of ShopServices: {e}", path.display()))
}

#[test]
fn each_bundled_service_has_an_example_of_its_component() {
    for service in services() {
        let path = repository_file(&format!("examples/{service}.yaml"));
        let shops = shop_services(&path);
        assert_eq!(shops.len(), 1, "{}", path.display());
        let shop = &shops[0];
        assert_eq!(shop.metadata.name.as_deref(), Some(service));
        assert_eq!(
            shop.spec.component.map(|c| c.as_str()),
            Some(service),
            "{}",
            path.display()
        );
    }
}

#[test]
fn the_whole_shop_is_the_example_of_every_service() {
    // By name: examples/shop.yaml is in reading order (the gateway first, the storefront last).
    let by_name = |shops: Vec<ShopService>| -> BTreeMap<String, ShopService> {
        shops
            .into_iter()
            .map(|shop| (shop.metadata.name.clone().unwrap_or_default(), shop))
            .collect()
    };
    let whole = shop_services(&repository_file("examples/shop.yaml"));
    let count = whole.len();
    let each = by_name(
        services()
            .flat_map(|service| {
                shop_services(&repository_file(&format!("examples/{service}.yaml")))
            })
            .collect(),
    );
    assert_eq!(count, each.len(), "one ShopService per service");
    assert_eq!(by_name(whole), each);
}
