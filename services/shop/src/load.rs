//! `shop load`: a realistic traffic mix through the gateway, from registered, logged-in virtual
//! users: mostly browsing and search, some cart changes, a few checkouts with a mix of test cards.
//!
//! Closed loop (`--concurrency N`: N users, each sending its next request when the last one is
//! answered) or open loop (`--rate R`: R requests started per second whatever the answers, latency
//! counted from when each was due, so a slow shop cannot hide its queue).

mod mix;
mod stats;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use reqwest::{RequestBuilder, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};

use mix::{BROWSE, Card, Operation, PAGES, Rng, SEARCH, cart_operation, choose, classify_answer};
pub use mix::{CardWeights, Classified, Group, Weights};
pub use stats::{Report, Row, Samples};

/// Concurrent virtual users when neither `--concurrency` nor `--rate` is given.
pub const DEFAULT_CONCURRENCY: u32 = 50;
/// The most lines a virtual user keeps in its cart; past it the user removes before adding.
const MAX_CART_LINES: usize = 5;
const SEARCH_TERMS: [&str; 8] = [
    "kettle", "lantern", "blanket", "classic", "puzzle", "mat", "compact", "deluxe",
];

#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// The gateway to drive.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Closed loop: this many virtual users, each sending its next request when the last one is
    /// answered [default: 50].
    #[arg(long, visible_alias = "connections", conflicts_with = "rate")]
    pub concurrency: Option<u32>,
    /// Open loop: start this many requests per second, answered or not.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Virtual users to share the open loop's requests [default: 50]; with --concurrency there is
    /// one user per concurrent client.
    #[arg(long, requires = "rate")]
    pub users: Option<u32>,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds of the same mix before measuring (fills connection pools and caches; not reported).
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// Relative weights of the traffic kinds; keys not named keep their default.
    #[arg(long, default_value_t = Weights::default())]
    pub weights: Weights,
    /// Relative weights of the test cards checkouts pay with; keys not named keep their default.
    #[arg(long, default_value_t = CardWeights::default())]
    pub cards: CardWeights,
    /// Print the report as JSON on stdout (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
}

/// How the load is paced, once the arguments are checked.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Pacing {
    Closed { concurrency: u32 },
    Open { rate: f64, users: u32 },
}

impl LoadArgs {
    /// Checks the arguments clap cannot: ranges, and which combinations make sense.
    pub fn pacing(&self) -> Result<Pacing, String> {
        if self.duration == 0 {
            return Err("--duration must be at least 1 second".into());
        }
        let check_users = |n: u32, flag: &str| {
            if (1..=10_000).contains(&n) {
                Ok(n)
            } else {
                Err(format!("{flag} must be 1 to 10000"))
            }
        };
        match (self.concurrency, self.rate) {
            (Some(_), Some(_)) => Err("give --concurrency or --rate, not both".into()),
            (None, Some(rate)) if !(rate.is_finite() && rate > 0.0 && rate <= 100_000.0) => {
                Err("--rate must be above 0 and at most 100000 requests/s".into())
            }
            (None, Some(rate)) => Ok(Pacing::Open {
                rate,
                users: check_users(self.users.unwrap_or(DEFAULT_CONCURRENCY), "--users")?,
            }),
            (_, None) if self.users.is_some() => {
                Err("--users goes with --rate; with --concurrency each client is a user".into())
            }
            (concurrency, None) => Ok(Pacing::Closed {
                concurrency: check_users(
                    concurrency.unwrap_or(DEFAULT_CONCURRENCY),
                    "--concurrency",
                )?,
            }),
        }
    }
}

pub fn client(connections: usize) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .build()
        .context("building the load client")
}

/// What the mix needs to know about the shop: product ids and category slugs.
struct Catalog {
    product_ids: Vec<String>,
    categories: Vec<String>,
}

async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value> {
    let response = client.get(url).send().await?;
    let status = response.status();
    if !status.is_success() {
        bail!("GET {url} answered {status}");
    }
    Ok(response.json().await?)
}

async fn read_catalog(client: &reqwest::Client, gateway: &str) -> Result<Catalog> {
    let mut product_ids = Vec::new();
    let mut cursor: Option<String> = None;
    // Ten pages of 100 are plenty to spread the reads; a huge catalog is sampled, not read.
    for _ in 0..10 {
        let mut url = format!("{gateway}/api/products?limit=100");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = get_json(client, &url).await?;
        product_ids.extend(
            page["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["id"].as_str().map(str::to_owned)),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    if product_ids.is_empty() {
        bail!("the catalog at {gateway} has no products");
    }
    let categories = get_json(client, &format!("{gateway}/api/categories"))
        .await?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["slug"].as_str().map(str::to_owned))
        .collect();
    Ok(Catalog {
        product_ids,
        categories,
    })
}

/// A registered, logged-in customer and what it knows of its own cart.
struct VirtualUser {
    token: String,
    refresh_token: String,
    /// When to refresh the access token: a minute before it expires.
    renew_at: Instant,
    cart: Vec<String>,
    rng: Rng,
}

fn random_seed() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

/// Sends a request for set-up, retrying while the gateway's rate limit says to slow down.
async fn setup_request(make: impl Fn() -> RequestBuilder) -> Result<reqwest::Response> {
    for _ in 0..100 {
        let response = make().send().await?;
        if response.status() != StatusCode::TOO_MANY_REQUESTS {
            return Ok(response);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the gateway kept answering 429 Too Many Requests")
}

fn take_tokens(user: &mut VirtualUser, tokens: &Value) -> Result<()> {
    user.token = tokens["access_token"]
        .as_str()
        .context("no access_token")?
        .to_owned();
    user.refresh_token = tokens["refresh_token"]
        .as_str()
        .context("no refresh_token")?
        .to_owned();
    let lifetime = Duration::from_secs(tokens["expires_in"].as_u64().unwrap_or(60));
    user.renew_at = Instant::now() + lifetime.saturating_sub(Duration::from_secs(60));
    Ok(())
}

async fn sign_up(client: &reqwest::Client, gateway: &str, email: String) -> Result<VirtualUser> {
    let password = format!("load password {}", random_seed());
    let created = setup_request(|| {
        client
            .post(format!("{gateway}/api/users"))
            .json(&json!({"email": email, "password": password, "name": "Load Tester"}))
    })
    .await?;
    if created.status() != StatusCode::CREATED {
        bail!(
            "registering {email} answered {}: {}",
            created.status(),
            created.text().await.unwrap_or_default()
        );
    }
    let login = setup_request(|| {
        client
            .post(format!("{gateway}/api/auth/login"))
            .json(&json!({"email": email, "password": password}))
    })
    .await?;
    if !login.status().is_success() {
        bail!("logging in {email} answered {}", login.status());
    }
    let mut user = VirtualUser {
        token: String::new(),
        refresh_token: String::new(),
        renew_at: Instant::now(),
        cart: Vec::new(),
        rng: Rng::new(random_seed()),
    };
    take_tokens(&mut user, &login.json().await?)?;
    Ok(user)
}

/// Sets the stock of every product (of the first thousand) to `on_hand`, as the admin `email`
/// (registered here: it must be one of the shop's `SHOP_ADMIN_EMAILS`). `shop bench` does so
/// before it measures: a run longer than the seeded stock lasts would otherwise measure
/// "out of stock" refusals instead of checkouts. Returns how many products it restocked.
pub async fn restock(gateway: &str, email: &str, on_hand: i64) -> Result<usize> {
    let gateway = gateway.trim_end_matches('/');
    let client = client(4)?;
    let catalog = read_catalog(&client, gateway).await?;
    let admin = sign_up(&client, gateway, email.to_owned()).await?;
    for id in &catalog.product_ids {
        let response = setup_request(|| {
            client
                .put(format!("{gateway}/api/stock/{id}"))
                .bearer_auth(&admin.token)
                .json(&json!({ "on_hand": on_hand }))
        })
        .await?;
        let status = response.status();
        if !status.is_success() {
            bail!(
                "setting the stock of {id} as {email} answered {status}: {}",
                response.text().await.unwrap_or_default()
            );
        }
    }
    Ok(catalog.product_ids.len())
}

/// Registers and logs in `count` users, a few at a time (each costs the user service two
/// password hashes).
async fn sign_up_all(
    client: &reqwest::Client,
    gateway: &str,
    count: u32,
) -> Result<Vec<VirtualUser>> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (client, gateway, run, next) = (
            client.clone(),
            gateway.to_owned(),
            run[..12].to_owned(),
            next.clone(),
        );
        workers.spawn(async move {
            let mut users = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(users);
                }
                let email = format!("load-{run}-{i}@example.com");
                users.push(sign_up(&client, &gateway, email).await?);
            }
        });
    }
    let mut users = Vec::new();
    while let Some(joined) = workers.join_next().await {
        users.extend(joined??);
    }
    Ok(users)
}

/// Everything a step needs besides its user.
struct Mix {
    client: reqwest::Client,
    gateway: String,
    catalog: Catalog,
    weights: Weights,
    cards: CardWeights,
    /// Requests sent before this are warm-up: sent, not reported.
    measure_from: Instant,
    until: Instant,
    /// A card expiry safely in the future.
    exp_year: u64,
}

fn transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "transport error".into()
    }
}

impl Mix {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway)
    }

    /// Sends one request, records it (unless it is warm-up) and returns its status, if answered.
    /// `started` is when it was due: now in the closed loop, its slot in the open loop.
    async fn send(
        &self,
        record: &mut stats::Recorder,
        operation: Operation,
        card: Option<Card>,
        request: RequestBuilder,
        started: Instant,
    ) -> Option<u16> {
        self.send_reading(record, operation, card, request, started)
            .await
            .map(|(status, _)| status)
    }

    /// [`Mix::send`], returning the answer's body too.
    async fn send_reading(
        &self,
        record: &mut stats::Recorder,
        operation: Operation,
        card: Option<Card>,
        request: RequestBuilder,
        started: Instant,
    ) -> Option<(u16, Vec<u8>)> {
        let answered = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(body) => Ok((status, body.to_vec())),
                    Err(e) => Err(transport_error(&e)),
                }
            }
            Err(e) => Err(transport_error(&e)),
        };
        let latency = started.elapsed();
        if started >= self.measure_from {
            let classified = match &answered {
                Ok((status, body)) => classify_answer(operation, card, *status, body),
                Err(kind) => Classified::Error(kind.clone()),
            };
            record.record(operation, latency, classified);
        }
        answered.ok()
    }

    async fn renew_token(&self, user: &mut VirtualUser) -> Result<()> {
        let response = setup_request(|| {
            self.client
                .post(self.url("/api/auth/refresh"))
                .json(&json!({"refresh_token": user.refresh_token}))
        })
        .await?;
        if !response.status().is_success() {
            bail!("refreshing a token answered {}", response.status());
        }
        take_tokens(user, &response.json().await?)
    }

    fn random_product(&self, rng: &mut Rng) -> &str {
        let ids = &self.catalog.product_ids;
        &ids[rng.below(ids.len() as u64) as usize]
    }

    /// One step of one user: picks a kind of traffic and sends its request(s).
    async fn step(&self, user: &mut VirtualUser, record: &mut stats::Recorder, due: Instant) {
        if Instant::now() >= user.renew_at
            && let Err(e) = self.renew_token(user).await
        {
            eprintln!("shop load: {e:#}");
        }
        let group = choose(&mut user.rng, &self.weights.table()).expect("weights were checked");
        let auth = |r: RequestBuilder| r.bearer_auth(&user.token);
        match group {
            Group::Browse => {
                let operation = choose(&mut user.rng, &BROWSE).expect("fixed weights");
                let path = match operation {
                    Operation::ProductDetails => {
                        format!("/api/products/{}", self.random_product(&mut user.rng))
                    }
                    Operation::ListProducts => "/api/products?limit=20".to_owned(),
                    _ => "/api/categories".to_owned(),
                };
                let request = auth(self.client.get(self.url(&path)));
                self.send(record, operation, None, request, due).await;
            }
            Group::Search => {
                let mut operation = choose(&mut user.rng, &SEARCH).expect("fixed weights");
                if self.catalog.categories.is_empty() {
                    operation = Operation::SearchText;
                }
                let path = if operation == Operation::SearchText {
                    let term = SEARCH_TERMS[user.rng.below(SEARCH_TERMS.len() as u64) as usize];
                    format!("/api/products?q={term}&limit=20")
                } else {
                    let categories = &self.catalog.categories;
                    let slug = &categories[user.rng.below(categories.len() as u64) as usize];
                    format!("/api/products?category={slug}&limit=20")
                };
                let request = auth(self.client.get(self.url(&path)));
                self.send(record, operation, None, request, due).await;
            }
            Group::Cart => match cart_operation(&mut user.rng, user.cart.len(), MAX_CART_LINES) {
                Operation::CartPut => self.add_to_cart(user, record, due).await,
                Operation::CartDelete => {
                    let line = user.rng.below(user.cart.len() as u64) as usize;
                    let product = user.cart.swap_remove(line);
                    self.remove_from_cart(user, &product, record, due).await;
                }
                _ => {
                    let request = auth(self.client.get(self.url("/api/cart")));
                    self.send(record, Operation::CartGet, None, request, due)
                        .await;
                }
            },
            Group::Checkout => self.checkout(user, record, due).await,
            Group::Pages => {
                // An anonymous visitor's page view, as a browser asks for it.
                let mut operation = choose(&mut user.rng, &PAGES).expect("fixed weights");
                if self.catalog.categories.is_empty() && operation == Operation::PageCategory {
                    operation = Operation::PageHome;
                }
                let path = match operation {
                    Operation::PageProduct => {
                        format!("/product/{}", self.random_product(&mut user.rng))
                    }
                    Operation::PageCategory => {
                        let categories = &self.catalog.categories;
                        let slug = &categories[user.rng.below(categories.len() as u64) as usize];
                        format!("/category/{slug}")
                    }
                    Operation::PageSearch => {
                        let term = SEARCH_TERMS[user.rng.below(SEARCH_TERMS.len() as u64) as usize];
                        format!("/search?q={term}")
                    }
                    _ => "/".to_owned(),
                };
                let request = self
                    .client
                    .get(self.url(&path))
                    .header("accept", "text/html");
                self.send(record, operation, None, request, due).await;
            }
        }
    }

    async fn add_to_cart(
        &self,
        user: &mut VirtualUser,
        record: &mut stats::Recorder,
        due: Instant,
    ) {
        let product = self.random_product(&mut user.rng).to_owned();
        let quantity = 1 + user.rng.below(3);
        let request = self
            .client
            .put(self.url(&format!("/api/cart/items/{product}")))
            .bearer_auth(&user.token)
            .json(&json!({ "quantity": quantity }));
        let status = self
            .send(record, Operation::CartPut, None, request, due)
            .await;
        if status.is_some_and(|s| (200..300).contains(&s)) && !user.cart.contains(&product) {
            user.cart.push(product);
        }
    }

    async fn remove_from_cart(
        &self,
        user: &VirtualUser,
        product: &str,
        record: &mut stats::Recorder,
        due: Instant,
    ) {
        let request = self
            .client
            .delete(self.url(&format!("/api/cart/items/{product}")))
            .bearer_auth(&user.token);
        self.send(record, Operation::CartDelete, None, request, due)
            .await;
    }

    /// Checks out the user's cart (filling it first if it is empty) with a card from the mix.
    /// Like a customer on the checkout page, it looks at the cart first: the server's cart is the
    /// truth (it loses what an earlier order bought a moment after that order's answer).
    async fn checkout(&self, user: &mut VirtualUser, record: &mut stats::Recorder, due: Instant) {
        let request = self
            .client
            .get(self.url("/api/cart"))
            .bearer_auth(&user.token);
        if let Some((200, body)) = self
            .send_reading(record, Operation::CartGet, None, request, due)
            .await
            && let Ok(cart) = serde_json::from_slice::<serde_json::Value>(&body)
        {
            user.cart = cart["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|line| line["product_id"].as_str().map(str::to_owned))
                .collect();
        }
        let mut due = Instant::now();
        if user.cart.is_empty() {
            self.add_to_cart(user, record, due).await;
            due = Instant::now();
        }
        let card = choose(&mut user.rng, &self.cards.table()).expect("card weights were checked");
        let body = json!({
            "shipping_address": {
                "name": "Load Tester", "line1": "1 Benchmark Street", "city": "Berlin",
                "postal_code": "10115", "country": "DE"
            },
            "payment": {
                "card_number": card.number(), "exp_month": 12, "exp_year": self.exp_year, "cvc": "123"
            }
        });
        let request = self
            .client
            .post(self.url("/api/orders"))
            .bearer_auth(&user.token)
            .header("idempotency-key", uuid::Uuid::new_v4().to_string())
            .json(&body);
        let status = self
            .send(record, Operation::Checkout, Some(card), request, due)
            .await;
        match status {
            // The order service empties the cart of a confirmed order.
            Some(s) if (200..300).contains(&s) => user.cart.clear(),
            // Something in the cart is gone: empty it, as a customer would, and shop on.
            Some(409) => {
                for product in std::mem::take(&mut user.cart) {
                    self.remove_from_cart(user, &product, record, Instant::now())
                        .await;
                }
            }
            _ => {}
        }
    }
}

/// [`execute`] for a task of its own (`tokio::spawn` needs the arguments owned).
pub async fn execute_owned(args: LoadArgs) -> Result<(Pacing, Report)> {
    execute(&args).await
}

/// Registers the users, runs the mix (warm-up, then the measured period) and returns the report.
/// Progress goes to stderr.
pub async fn execute(args: &LoadArgs) -> Result<(Pacing, Report)> {
    let pacing = args.pacing().map_err(anyhow::Error::msg)?;
    let gateway = args.url.trim_end_matches('/').to_owned();
    let users = match pacing {
        Pacing::Closed { concurrency } => concurrency,
        Pacing::Open { users, .. } => users,
    };
    let client = client(users as usize)?;
    let catalog = read_catalog(&client, &gateway)
        .await
        .with_context(|| format!("reading the catalog through {gateway}"))?;
    let set_up = Instant::now();
    let mut users = sign_up_all(&client, &gateway, users)
        .await
        .context("registering the virtual users")?;
    eprintln!(
        "shop load: {} users registered and logged in ({} ms); {} products, {} categories",
        users.len(),
        set_up.elapsed().as_millis(),
        catalog.product_ids.len(),
        catalog.categories.len()
    );
    let years_since_1970 = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs()
        / 31_556_952;
    let measure_from = Instant::now() + Duration::from_secs(args.warmup);
    let mix = Arc::new(Mix {
        client,
        gateway,
        catalog,
        weights: args.weights,
        cards: args.cards,
        measure_from,
        until: measure_from + Duration::from_secs(args.duration),
        exp_year: 1970 + years_since_1970 + 3,
    });
    let record = match pacing {
        Pacing::Closed { .. } => closed_loop(&mix, users).await,
        Pacing::Open { rate, .. } => open_loop(&mix, std::mem::take(&mut users), rate).await,
    };
    Ok((pacing, record.report(mix.until - mix.measure_from)))
}

async fn closed_loop(mix: &Arc<Mix>, users: Vec<VirtualUser>) -> stats::Recorder {
    let mut loops = tokio::task::JoinSet::new();
    for mut user in users {
        let mix = mix.clone();
        loops.spawn(async move {
            let mut record = stats::Recorder::default();
            while Instant::now() < mix.until {
                mix.step(&mut user, &mut record, Instant::now()).await;
            }
            record
        });
    }
    let mut all = stats::Recorder::default();
    while let Some(joined) = loops.join_next().await {
        all.merge(joined.expect("a load loop does not panic"));
    }
    all
}

async fn open_loop(mix: &Arc<Mix>, users: Vec<VirtualUser>, rate: f64) -> stats::Recorder {
    let idle = Arc::new(tokio::sync::Semaphore::new(users.len()));
    let pool = Arc::new(Mutex::new(users));
    let all = Arc::new(Mutex::new(stats::Recorder::default()));
    let mut steps = tokio::task::JoinSet::new();
    let start = Instant::now();
    for k in 0u64.. {
        let due = start + Duration::from_secs_f64(k as f64 / rate);
        if due >= mix.until {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let (mix, idle, pool, all) = (mix.clone(), idle.clone(), pool.clone(), all.clone());
        steps.spawn(async move {
            // Waiting for a free user is part of the latency: the request was due at `due`.
            let _permit = idle.acquire().await.expect("the semaphore is never closed");
            let mut user = pool
                .lock()
                .expect("user pool")
                .pop()
                .expect("a permit means a user");
            let mut record = stats::Recorder::default();
            mix.step(&mut user, &mut record, due).await;
            pool.lock().expect("user pool").push(user);
            all.lock().expect("recorder").merge(record);
        });
        while steps.try_join_next().is_some() {}
    }
    while steps.join_next().await.is_some() {}
    let mut all = all.lock().expect("recorder");
    std::mem::take(&mut *all)
}

#[derive(Serialize)]
struct JsonReport<'a> {
    url: &'a str,
    pacing: Pacing,
    weights: String,
    cards: String,
    warmup_s: u64,
    #[serde(flatten)]
    report: &'a Report,
}

pub async fn run(args: LoadArgs) -> Result<()> {
    let (pacing, report) = execute(&args).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&JsonReport {
                url: &args.url,
                pacing,
                weights: args.weights.to_string(),
                cards: args.cards.to_string(),
                warmup_s: args.warmup,
                report: &report,
            })?
        );
        return Ok(());
    }
    let paced = match pacing {
        Pacing::Closed { concurrency } => format!("{concurrency} concurrent users (closed loop)"),
        Pacing::Open { rate, users } => format!("{rate} requests/s from {users} users (open loop)"),
    };
    println!(
        "\nshop load: {} with {paced}, {} s measured after {} s warm-up\n  mix {}; cards {}\n",
        args.url, args.duration, args.warmup, args.weights, args.cards
    );
    report.print();
    println!();
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn pacing(args: &[&str]) -> Result<Pacing, String> {
        let cli = Cli::try_parse_from(std::iter::once("load").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.load.pacing()
    }

    #[test]
    fn closed_loop_by_default() {
        assert_eq!(
            pacing(&[]),
            Ok(Pacing::Closed {
                concurrency: DEFAULT_CONCURRENCY
            })
        );
        assert_eq!(
            pacing(&["--connections", "8"]),
            Ok(Pacing::Closed { concurrency: 8 })
        );
        assert_eq!(
            pacing(&["--rate", "250"]),
            Ok(Pacing::Open {
                rate: 250.0,
                users: DEFAULT_CONCURRENCY
            })
        );
        assert_eq!(
            pacing(&["--rate", "10", "--users", "3"]),
            Ok(Pacing::Open {
                rate: 10.0,
                users: 3
            })
        );
    }

    #[test]
    fn nonsense_is_refused_with_the_reason() {
        let refused = |args: &[&str]| pacing(args).unwrap_err();
        assert!(refused(&["--concurrency", "5", "--rate", "5"]).contains("cannot be used with"));
        assert!(refused(&["--concurrency", "0"]).contains("1 to 10000"));
        assert!(refused(&["--rate", "0"]).contains("above 0"));
        assert!(refused(&["--rate=-3"]).contains("above 0"));
        assert!(refused(&["--rate", "NaN"]).contains("above 0"));
        assert!(refused(&["--rate", "5", "--users", "0"]).contains("--users must be"));
        assert!(refused(&["--users", "5"]).contains("--rate"));
        assert!(refused(&["--duration", "0"]).contains("at least 1 second"));
        assert!(refused(&["--weights", "browse=0,search=0,cart=0,checkout=0"]).contains("above 0"));
        assert!(refused(&["--cards", "gold=3"]).contains("unknown key"));
    }
}
