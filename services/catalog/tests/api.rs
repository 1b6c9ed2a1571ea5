//! The catalog service over real HTTP, on SQLite and on PostgreSQL.

use std::collections::HashSet;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop_kit::context::{USER_ID_HEADER, USER_ROLES_HEADER};
use shop_kit::testing::{self, TestDatabase, TestServer, expect_problem};

const ADMIN: &str = "0190f5c4-0000-7000-8000-000000000001";

async fn start(db: &TestDatabase) -> TestServer {
    let runtime = shop_events::testing::runtime("catalog", &db.url);
    let service = shop_catalog::build(&runtime, shop_catalog::Settings::default())
        .await
        .expect("the catalog builds");
    testing::spawn_service(service, &runtime.config, &runtime.metrics).await
}

async fn get(client: &Client, url: &str) -> Value {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    response.json().await.unwrap()
}

fn new_product(sku: &str) -> Value {
    json!({
        "sku": sku, "name": "Test Teapot", "description": "For tests",
        "price": {"amount": 2500, "currency": "USD"}, "categories": ["kitchen"],
    })
}

#[tokio::test]
async fn browsing_and_search() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let server = start(&db).await;
        let (client, url) = (Client::new(), server.url.as_str());

        // Walk every page of the seed catalog: each product once, in name order.
        let mut seen = Vec::new();
        let mut next = format!("{url}/api/products?limit=100");
        loop {
            let page = get(&client, &next).await;
            for item in page["items"].as_array().unwrap() {
                seen.push((
                    item["name"].as_str().unwrap().to_owned(),
                    item["id"].as_str().unwrap().to_owned(),
                ));
            }
            match page["next_cursor"].as_str() {
                Some(cursor) => next = format!("{url}/api/products?limit=100&cursor={cursor}"),
                None => break,
            }
        }
        assert!(seen.len() >= 200, "{} products", seen.len());
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "pages are ordered and never repeat"
        );

        let found = get(&client, &format!("{url}/api/products?q=KETTLE")).await;
        let items = found["items"].as_array().unwrap();
        assert_eq!(items.len(), 4);
        assert!(
            items
                .iter()
                .all(|p| p["name"].as_str().unwrap().contains("Kettle"))
        );

        let kitchen = get(
            &client,
            &format!("{url}/api/products?category=kitchen&limit=100"),
        )
        .await;
        let kitchen = kitchen["items"].as_array().unwrap();
        assert_eq!(kitchen.len(), 28);
        assert!(
            kitchen
                .iter()
                .all(|p| p["categories"] == json!(["kitchen"]))
        );
        let both = get(
            &client,
            &format!("{url}/api/products?category=books&q=kettle"),
        )
        .await;
        assert_eq!(both["items"], json!([]));

        // SQL and LIKE syntax in a search is just text.
        for q in ["' OR 1=1 --", "%", "_", "kettle'; DROP TABLE products; --"] {
            let found = client
                .get(format!("{url}/api/products"))
                .query(&[("q", q)])
                .send()
                .await
                .unwrap();
            assert_eq!(found.status(), StatusCode::OK, "{q}");
            assert_eq!(
                found.json::<Value>().await.unwrap()["items"],
                json!([]),
                "{q}"
            );
        }

        let one = &items[0];
        let fetched = get(
            &client,
            &format!("{url}/api/products/{}", one["id"].as_str().unwrap()),
        )
        .await;
        assert_eq!(&fetched, one);
        assert_eq!(fetched["price"]["currency"], "USD");
        let categories = get(&client, &format!("{url}/api/categories")).await;
        assert_eq!(categories.as_array().unwrap().len(), 8);

        expect_problem(
            client
                .get(format!("{url}/api/products/{}", uuid::Uuid::new_v4()))
                .send()
                .await
                .unwrap(),
            404,
        )
        .await;
        expect_problem(
            client
                .get(format!("{url}/api/products/not-a-uuid"))
                .send()
                .await
                .unwrap(),
            404,
        )
        .await;
        expect_problem(
            client
                .get(format!("{url}/api/products?limit=0"))
                .send()
                .await
                .unwrap(),
            422,
        )
        .await;
        expect_problem(
            client
                .get(format!("{url}/api/products?limit=1000"))
                .send()
                .await
                .unwrap(),
            422,
        )
        .await;
        expect_problem(
            client
                .get(format!("{url}/api/products?limit=ten"))
                .send()
                .await
                .unwrap(),
            400,
        )
        .await;
        expect_problem(
            client
                .get(format!("{url}/api/products?cursor=garbage"))
                .send()
                .await
                .unwrap(),
            400,
        )
        .await;
        let long = "q".repeat(101);
        expect_problem(
            client
                .get(format!("{url}/api/products?q={long}"))
                .send()
                .await
                .unwrap(),
            422,
        )
        .await;
    }
}

#[tokio::test]
async fn admin_editing() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let server = start(&db).await;
        let (client, url) = (Client::new(), server.url.as_str());
        let admin = |request: reqwest::RequestBuilder| {
            request
                .header(USER_ID_HEADER, ADMIN)
                .header(USER_ROLES_HEADER, "admin")
        };

        // Only admins write.
        let anonymous = client
            .post(format!("{url}/api/products"))
            .json(&new_product("TST-1"))
            .send()
            .await
            .unwrap();
        expect_problem(anonymous, 401).await;
        let customer = client
            .post(format!("{url}/api/products"))
            .header(USER_ID_HEADER, ADMIN)
            .json(&new_product("TST-1"))
            .send()
            .await
            .unwrap();
        expect_problem(customer, 403).await;

        let created = admin(client.post(format!("{url}/api/products")))
            .json(&new_product("TST-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        let created: Value = created.json().await.unwrap();
        let id = created["id"].as_str().unwrap();
        assert_eq!(created["price"], json!({"amount": 2500, "currency": "USD"}));

        // Bad products are refused with the field named, and nothing is written.
        let dup = admin(client.post(format!("{url}/api/products")))
            .json(&new_product("TST-1"))
            .send()
            .await
            .unwrap();
        expect_problem(dup, 409).await;
        for (field, value) in [
            ("categories", json!(["no-such-category"])),
            ("categories", json!([])),
            ("price", json!({"amount": -1, "currency": "USD"})),
            ("price", json!({"amount": 1, "currency": "dollars"})),
            ("name", json!("n".repeat(201))),
            ("sku", json!("lower case")),
        ] {
            let mut body = new_product("TST-2");
            body[field] = value;
            let refused = admin(client.post(format!("{url}/api/products")))
                .json(&body)
                .send()
                .await
                .unwrap();
            let problem = expect_problem(refused, 422).await;
            assert!(
                problem.errors.iter().any(|e| e.field.starts_with(field)),
                "{field}: {problem:?}"
            );
        }
        let search = get(&client, &format!("{url}/api/products?q=tst-2")).await;
        assert_eq!(search["items"], json!([]), "no refused product was stored");

        // Read (and so cached by the catalog) before the edit: the edit must show at once.
        let listed = get(&client, &format!("{url}/api/products?q=tst-1")).await;
        assert_eq!(listed["items"][0]["id"], id);
        let mut changed = new_product("TST-1");
        changed["name"] = json!("Renamed Teapot");
        changed["categories"] = json!(["kitchen", "home"]);
        let updated = admin(client.put(format!("{url}/api/products/{id}")))
            .json(&changed)
            .send()
            .await
            .unwrap();
        assert_eq!(updated.status(), StatusCode::OK);
        let updated: Value = updated.json().await.unwrap();
        assert_eq!(updated["name"], "Renamed Teapot");
        let cats: HashSet<_> = updated["categories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(cats, HashSet::from(["kitchen", "home"]));
        assert_eq!(
            get(&client, &format!("{url}/api/products?q=renamed")).await["items"][0]["id"],
            id
        );
        assert_eq!(
            get(&client, &format!("{url}/api/products?q=tst-1")).await["items"][0]["name"],
            "Renamed Teapot",
            "a listing read before the edit is not answered from memory after it"
        );

        assert_eq!(
            admin(client.delete(format!("{url}/api/products/{id}")))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::NO_CONTENT
        );
        expect_problem(
            client
                .get(format!("{url}/api/products/{id}"))
                .send()
                .await
                .unwrap(),
            404,
        )
        .await;
        expect_problem(
            admin(client.delete(format!("{url}/api/products/{id}")))
                .send()
                .await
                .unwrap(),
            404,
        )
        .await;

        let before = get(&client, &format!("{url}/api/categories")).await;
        let category = admin(client.post(format!("{url}/api/categories")))
            .json(&json!({"slug": "garden", "name": "Garden"}))
            .send()
            .await
            .unwrap();
        assert_eq!(category.status(), StatusCode::CREATED);
        let after = get(&client, &format!("{url}/api/categories")).await;
        assert_eq!(
            after.as_array().unwrap().len(),
            before.as_array().unwrap().len() + 1,
            "the new category is listed at once"
        );
        let again = admin(client.post(format!("{url}/api/categories")))
            .json(&json!({"slug": "garden", "name": "Garden"}))
            .send()
            .await
            .unwrap();
        expect_problem(again, 409).await;
    }
}

#[tokio::test]
async fn a_restart_does_not_seed_again() {
    let db = testing::sqlite();
    let first = start(&db).await;
    let client = Client::new();
    let kettle =
        get(&client, &format!("{}/api/products?q=kettle", first.url)).await["items"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
    // Delete a seeded product: seeding again (with its fixed ids) would bring it back.
    let deleted = client
        .delete(format!("{}/api/products/{kettle}", first.url))
        .header(USER_ID_HEADER, ADMIN)
        .header(USER_ROLES_HEADER, "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    drop(first);
    let second = start(&db).await;
    let gone = client
        .get(format!("{}/api/products/{kettle}", second.url))
        .send()
        .await
        .unwrap();
    expect_problem(gone, 404).await;
}
