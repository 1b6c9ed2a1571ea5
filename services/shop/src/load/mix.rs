//! The traffic mix, pure: which operations there are, how often each is picked, which test card a
//! checkout pays with, and how an answer is classified (success, expected business outcome, error).

use std::fmt;
use std::str::FromStr;

use shop_contracts::test_cards;

/// The four kinds of traffic the mix is weighted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    Browse,
    Search,
    Cart,
    Checkout,
    /// The storefront's HTML pages, through the gateway.
    Pages,
}

impl Group {
    #[cfg(test)]
    pub const ALL: [Self; 5] = [
        Self::Browse,
        Self::Search,
        Self::Cart,
        Self::Checkout,
        Self::Pages,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Browse => "browse",
            Self::Search => "search",
            Self::Cart => "cart",
            Self::Checkout => "checkout",
            Self::Pages => "pages",
        }
    }
}

/// One kind of request the load sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    ListProducts,
    ProductDetails,
    Categories,
    SearchText,
    SearchCategory,
    CartPut,
    CartDelete,
    CartGet,
    Checkout,
    PageHome,
    PageSearch,
    PageCategory,
    PageProduct,
}

impl Operation {
    #[cfg(test)]
    pub const ALL: [Self; 13] = [
        Self::ListProducts,
        Self::ProductDetails,
        Self::Categories,
        Self::SearchText,
        Self::SearchCategory,
        Self::CartPut,
        Self::CartDelete,
        Self::CartGet,
        Self::Checkout,
        Self::PageHome,
        Self::PageSearch,
        Self::PageCategory,
        Self::PageProduct,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::ListProducts => "GET /api/products",
            Self::ProductDetails => "GET /api/products/{id}",
            Self::Categories => "GET /api/categories",
            Self::SearchText => "GET /api/products?q=",
            Self::SearchCategory => "GET /api/products?category=",
            Self::CartPut => "PUT /api/cart/items/{id}",
            Self::CartDelete => "DELETE /api/cart/items/{id}",
            Self::CartGet => "GET /api/cart",
            Self::Checkout => "POST /api/orders",
            Self::PageHome => "GET / (page)",
            Self::PageSearch => "GET /search?q= (page)",
            Self::PageCategory => "GET /category/{slug} (page)",
            Self::PageProduct => "GET /product/{id} (page)",
        }
    }

    pub fn group(self) -> Group {
        match self {
            Self::ListProducts | Self::ProductDetails | Self::Categories => Group::Browse,
            Self::SearchText | Self::SearchCategory => Group::Search,
            Self::CartPut | Self::CartDelete | Self::CartGet => Group::Cart,
            Self::Checkout => Group::Checkout,
            Self::PageHome | Self::PageSearch | Self::PageCategory | Self::PageProduct => {
                Group::Pages
            }
        }
    }
}

/// Within browsing: mostly product pages, some listings, a few category lists.
pub const BROWSE: [(Operation, u32); 3] = [
    (Operation::ProductDetails, 60),
    (Operation::ListProducts, 30),
    (Operation::Categories, 10),
];

/// Within the storefront's pages: a visit's shape, mostly product pages.
pub const PAGES: [(Operation, u32); 4] = [
    (Operation::PageProduct, 50),
    (Operation::PageCategory, 20),
    (Operation::PageSearch, 20),
    (Operation::PageHome, 10),
];

/// Within search: mostly free text, some category filters.
pub const SEARCH: [(Operation, u32); 2] =
    [(Operation::SearchText, 70), (Operation::SearchCategory, 30)];

/// A user's cart change, given how many lines their cart has: an empty cart can only grow, a full
/// one (by our own bound, `max_lines`) only shrinks or is looked at.
pub fn cart_operation(rng: &mut Rng, lines: usize, max_lines: usize) -> Operation {
    if lines == 0 {
        return Operation::CartPut;
    }
    let put = if lines >= max_lines { 0 } else { 50 };
    choose(
        rng,
        &[
            (Operation::CartPut, put),
            (Operation::CartGet, 30),
            (Operation::CartDelete, 20),
        ],
    )
    .expect("get and delete always have weight")
}

/// Parses `key=weight,key=weight` over a fixed set of keys; keys not named keep `defaults`.
fn parse_weights<const N: usize>(
    text: &str,
    keys: [&str; N],
    defaults: [u32; N],
) -> Result<[u32; N], String> {
    let mut weights = defaults;
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` is not key=weight"))?;
        let index = keys
            .iter()
            .position(|k| *k == key.trim())
            .ok_or_else(|| format!("unknown key `{}` (known: {})", key.trim(), keys.join(", ")))?;
        weights[index] = value
            .trim()
            .parse()
            .map_err(|_| format!("`{}` is not a whole number ≥ 0", value.trim()))?;
    }
    if weights.iter().all(|w| *w == 0) {
        return Err("at least one weight must be above 0".into());
    }
    Ok(weights)
}

/// How often each kind of traffic is picked (relative weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights {
    pub browse: u32,
    pub search: u32,
    pub cart: u32,
    pub checkout: u32,
    /// The storefront's pages; none in the default mix, which measures the API.
    pub pages: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            browse: 60,
            search: 20,
            cart: 15,
            checkout: 5,
            pages: 0,
        }
    }
}

impl FromStr for Weights {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        // The storefront's mix: only pages, as browsers visit them.
        if text.trim() == BROWSE_PAGES {
            return Ok(Self {
                browse: 0,
                search: 0,
                cart: 0,
                checkout: 0,
                pages: 1,
            });
        }
        let d = Self::default();
        let [browse, search, cart, checkout, pages] = parse_weights(
            text,
            ["browse", "search", "cart", "checkout", "pages"],
            [d.browse, d.search, d.cart, d.checkout, d.pages],
        )?;
        Ok(Self {
            browse,
            search,
            cart,
            checkout,
            pages,
        })
    }
}

/// The name of the pages-only mix (`--weights browse-pages`).
pub const BROWSE_PAGES: &str = "browse-pages";

impl fmt::Display for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "browse={},search={},cart={},checkout={},pages={}",
            self.browse, self.search, self.cart, self.checkout, self.pages
        )
    }
}

impl Weights {
    pub fn table(&self) -> [(Group, u32); 5] {
        [
            (Group::Browse, self.browse),
            (Group::Search, self.search),
            (Group::Cart, self.cart),
            (Group::Checkout, self.checkout),
            (Group::Pages, self.pages),
        ]
    }
}

/// The test cards of the payment simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Card {
    Good,
    Declined,
    InsufficientFunds,
}

impl Card {
    pub fn number(self) -> &'static str {
        match self {
            Self::Good => test_cards::SUCCEEDS,
            Self::Declined => test_cards::DECLINED,
            Self::InsufficientFunds => test_cards::INSUFFICIENT_FUNDS,
        }
    }
}

/// How often a checkout pays with each test card (relative weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardWeights {
    pub good: u32,
    pub declined: u32,
    pub insufficient: u32,
}

impl Default for CardWeights {
    fn default() -> Self {
        Self {
            good: 90,
            declined: 5,
            insufficient: 5,
        }
    }
}

impl FromStr for CardWeights {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let d = Self::default();
        let [good, declined, insufficient] = parse_weights(
            text,
            ["good", "declined", "insufficient"],
            [d.good, d.declined, d.insufficient],
        )?;
        Ok(Self {
            good,
            declined,
            insufficient,
        })
    }
}

impl fmt::Display for CardWeights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "good={},declined={},insufficient={}",
            self.good, self.declined, self.insufficient
        )
    }
}

impl CardWeights {
    pub fn table(&self) -> [(Card, u32); 3] {
        [
            (Card::Good, self.good),
            (Card::Declined, self.declined),
            (Card::InsufficientFunds, self.insufficient),
        ]
    }
}

/// SplitMix64: small, fast and good enough to pick traffic; each virtual user has its own.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0); the modulo bias is far below anything a load mix can show.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Picks an item with probability proportional to its weight; `None` when every weight is 0.
pub fn choose<T: Copy>(rng: &mut Rng, weighted: &[(T, u32)]) -> Option<T> {
    let total: u64 = weighted.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return None;
    }
    let mut ticket = rng.below(total);
    for (item, weight) in weighted {
        let weight = u64::from(*weight);
        if ticket < weight {
            return Some(*item);
        }
        ticket -= weight;
    }
    unreachable!("the ticket is below the total of the weights")
}

/// What an answer means for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    Success,
    /// An answer the business rules call for (a declined card, stock gone): counted, not an error.
    Outcome(&'static str),
    Error(String),
}

/// Classifies an answer: [`classify`], and for a checkout whose cart was emptied between the look
/// at it and the order (the cart loses an earlier order's lines a moment after that order's
/// answer), the shop's `409 empty-cart` is an outcome, not an error.
pub fn classify_answer(
    operation: Operation,
    card: Option<Card>,
    status: u16,
    body: &[u8],
) -> Classified {
    if operation == Operation::Checkout && status == 409 {
        let problem: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let kind = problem
            .as_ref()
            .and_then(|p| p["type"].as_str())
            .unwrap_or_default();
        if kind.ends_with("empty-cart") {
            return Classified::Outcome("409 cart emptied meanwhile");
        }
    }
    classify(operation, card, status)
}

/// Classifies an HTTP status for an operation (and, for a checkout, the card it paid with).
pub fn classify(operation: Operation, card: Option<Card>, status: u16) -> Classified {
    let success = (200..300).contains(&status);
    if operation != Operation::Checkout {
        return if success {
            Classified::Success
        } else {
            Classified::Error(format!("HTTP {status}"))
        };
    }
    match (status, card) {
        (409, _) => Classified::Outcome("409 out of stock"),
        (402, Some(Card::Declined)) => Classified::Outcome("402 declined"),
        (402, Some(Card::InsufficientFunds)) => Classified::Outcome("402 insufficient funds"),
        (402, _) => Classified::Error("HTTP 402 for the good card".into()),
        (_, Some(Card::Declined | Card::InsufficientFunds)) if success => {
            Classified::Error(format!("HTTP {status} for a refused card"))
        }
        _ if success => Classified::Success,
        _ => Classified::Error(format!("HTTP {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkout_of_a_cart_emptied_meanwhile_is_an_outcome() {
        let empty = br#"{"type":"https://shop.dev/problems/empty-cart","status":409}"#;
        let other = br#"{"type":"https://shop.dev/problems/validation","status":422}"#;
        assert!(matches!(
            classify_answer(Operation::Checkout, Some(Card::Good), 409, empty),
            Classified::Outcome("409 cart emptied meanwhile")
        ));
        assert!(matches!(
            classify_answer(Operation::Checkout, Some(Card::Good), 422, other),
            Classified::Error(_)
        ));
        assert!(matches!(
            classify_answer(Operation::CartGet, None, 409, empty),
            Classified::Error(_)
        ));
    }

    #[test]
    fn weighted_choice_follows_the_weights() {
        let mut rng = Rng::new(7);
        let table = [("a", 60), ("b", 30), ("c", 10), ("never", 0)];
        let mut counts = std::collections::HashMap::new();
        for _ in 0..100_000 {
            *counts.entry(choose(&mut rng, &table).unwrap()).or_insert(0) += 1;
        }
        assert!(!counts.contains_key("never"));
        for (item, weight) in &table[..3] {
            let share = f64::from(counts[item]) / 100_000.0;
            let expected = f64::from(*weight) / 100.0;
            assert!(
                (share - expected).abs() < 0.01,
                "{item}: {share} against {expected}"
            );
        }
    }

    #[test]
    fn weighted_choice_of_nothing_is_none() {
        let mut rng = Rng::new(1);
        assert_eq!(choose::<u8>(&mut rng, &[]), None);
        assert_eq!(choose(&mut rng, &[(1, 0), (2, 0)]), None);
        assert_eq!(choose(&mut rng, &[(1, 0), (2, 5)]), Some(2));
    }

    #[test]
    fn each_seed_gives_its_own_sequence() {
        let (mut a, mut b) = (Rng::new(1), Rng::new(2));
        let first: Vec<_> = (0..4).map(|_| a.next_u64()).collect();
        assert_ne!(first, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
        let mut again = Rng::new(1);
        assert_eq!(first, (0..4).map(|_| again.next_u64()).collect::<Vec<_>>());
    }

    #[test]
    fn weights_parse_over_the_defaults() {
        assert_eq!("".parse::<Weights>().unwrap(), Weights::default());
        let w: Weights = "checkout=0, cart = 30".parse().unwrap();
        assert_eq!(
            w,
            Weights {
                browse: 60,
                search: 20,
                cart: 30,
                checkout: 0,
                pages: 0,
            }
        );
        assert_eq!(w.to_string().parse::<Weights>().unwrap(), w);
        // The storefront's mix: pages only.
        let pages: Weights = "browse-pages".parse().unwrap();
        assert_eq!(pages.table().map(|(_, w)| w), [0, 0, 0, 0, 1]);
        assert_eq!(pages.to_string().parse::<Weights>().unwrap(), pages);
        let cards: CardWeights = "good=1,declined=1,insufficient=1".parse().unwrap();
        assert_eq!(cards.table().map(|(_, w)| w), [1, 1, 1]);
    }

    #[test]
    fn bad_weights_are_refused_with_the_reason() {
        let err = |t: &str| t.parse::<Weights>().unwrap_err();
        assert!(err("browse").contains("not key=weight"));
        assert!(err("brows=3").contains("unknown key `brows`"));
        assert!(err("cart=-1").contains("not a whole number"));
        assert!(err("browse=0,search=0,cart=0,checkout=0").contains("above 0"));
        assert!(
            "good=0,declined=0,insufficient=0"
                .parse::<CardWeights>()
                .is_err()
        );
    }

    #[test]
    fn business_outcomes_are_not_errors() {
        use Classified::*;
        let checkout = |card, status| classify(Operation::Checkout, Some(card), status);
        assert_eq!(checkout(Card::Good, 201), Success);
        assert_eq!(checkout(Card::Declined, 402), Outcome("402 declined"));
        assert_eq!(
            checkout(Card::InsufficientFunds, 402),
            Outcome("402 insufficient funds")
        );
        assert_eq!(checkout(Card::Good, 409), Outcome("409 out of stock"));
        assert_eq!(checkout(Card::Declined, 409), Outcome("409 out of stock"));
    }

    #[test]
    fn wrong_answers_are_errors() {
        use Classified::*;
        let checkout = |card, status| classify(Operation::Checkout, Some(card), status);
        assert_eq!(
            checkout(Card::Good, 402),
            Error("HTTP 402 for the good card".into())
        );
        assert_eq!(
            checkout(Card::Declined, 201),
            Error("HTTP 201 for a refused card".into())
        );
        assert_eq!(checkout(Card::Good, 503), Error("HTTP 503".into()));
        assert_eq!(checkout(Card::Good, 404), Error("HTTP 404".into()));
        assert_eq!(classify(Operation::CartPut, None, 200), Success);
        // Outside checkout, 402 and 409 are nobody's business outcome.
        assert_eq!(
            classify(Operation::CartPut, None, 409),
            Error("HTTP 409".into())
        );
        assert_eq!(
            classify(Operation::ProductDetails, None, 429),
            Error("HTTP 429".into())
        );
    }

    #[test]
    fn carts_grow_from_empty_and_shrink_when_full() {
        let mut rng = Rng::new(3);
        for _ in 0..1000 {
            assert_eq!(cart_operation(&mut rng, 0, 5), Operation::CartPut);
            assert_ne!(cart_operation(&mut rng, 5, 5), Operation::CartPut);
        }
        let mixed: std::collections::HashSet<_> =
            (0..1000).map(|_| cart_operation(&mut rng, 2, 5)).collect();
        assert_eq!(mixed.len(), 3);
    }

    #[test]
    fn every_operation_belongs_to_a_group() {
        for group in Group::ALL {
            assert!(Operation::ALL.iter().any(|o| o.group() == group));
        }
    }
}
