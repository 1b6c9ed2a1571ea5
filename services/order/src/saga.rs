//! The checkout saga: reserve → quote → charge → commit → ship → CONFIRMED, or compensations
//! (release, refund) → FAILED.
//!
//! Every step is persisted (see `storage`) and every downstream call is idempotent per order, so
//! a step can be repeated after a crash between the call and the write recording it. The card
//! lives only in the memory of the request that brought it: a saga resumed without it cannot
//! charge, so one cut off before its charge is compensated instead (unless payment shows the
//! charge was made, in which case it goes on).

use std::time::Duration;

use axum::http::{Method, StatusCode};
use shop_contracts::cart::{CART_PATH, Cart};
use shop_contracts::catalog::{Product, product_path};
use shop_contracts::inventory::{self, Reservation, ReserveItem, ReserveRequest};
use shop_contracts::payment::{
    self, Card, ChargeCreated, ChargeList, ChargeRequest, ChargeStatus, Declined, RefundCreated,
    RefundRequest,
};
use shop_contracts::shipping::{self, CreateShipment, Item, Quote, QuoteRequest, Shipment};
use shop_contracts::{Money, OrderId, ProductId, UserId};
use shop_kit::context::{USER_ID_HEADER, USER_ROLES_HEADER};
use shop_kit::idempotency;
use shop_kit::propagation;
use shop_kit::{Caller, FieldError, Problem, Upstream, UpstreamError};
use tracing::Instrument;
use uuid::Uuid;

use crate::domain::{self, OrderItem, PaymentDetails, Step, reason};
use crate::storage::{Advanced, Failure, Progress, SagaState, Store};

/// The services the order service calls.
#[derive(Clone, Debug)]
pub struct Upstreams {
    pub cart: Upstream,
    pub catalog: Upstream,
    pub inventory: Upstream,
    pub payment: Upstream,
    pub shipping: Upstream,
}

/// What stopped a saga run before a terminal step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Reached CONFIRMED or FAILED.
    Finished,
    /// Another runner holds the order now (or it moved on): this one stops.
    Lost,
    /// A step cannot be done now (an upstream is down) and must not be compensated; the resumer
    /// tries again after the lease.
    Waiting,
    /// The crash test hook halted it.
    Halted,
}

#[derive(Clone)]
pub struct Saga {
    pub store: Store,
    pub upstreams: Upstreams,
    /// `SHOP_ORDER_CRASH_AT`: the test hook (see [`crate::Settings::crash_at`]).
    pub crash_at: Option<Step>,
    pub crash: Crash,
    /// Wakes the outbox relay when an order ends.
    pub relay: shop_events::Waker,
    /// How sagas end and how long their steps take.
    pub metrics: crate::metrics::SagaMetrics,
}

/// What the crash test hook does right after persisting its step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Crash {
    /// SIGKILL the process (`SHOP_ORDER_CRASH_AT`).
    #[default]
    Kill,
    /// Stop this saga run there, as if the process had died (for in-process tests, which then
    /// start a new service on the same database).
    Halt,
}

/// A downstream call that did not give the answer the step needs.
enum CallError {
    /// The service refused (4xx): a business answer.
    Rejected(StatusCode, Option<Problem>),
    /// No usable answer. `maybe_done` when the request may have reached the service and taken
    /// effect (a timeout, a 5xx), as opposed to never being sent (circuit open, connect refused).
    Unavailable { message: String, maybe_done: bool },
}

impl From<UpstreamError> for CallError {
    fn from(e: UpstreamError) -> Self {
        let message = e.to_string();
        match e {
            UpstreamError::Status {
                status, problem, ..
            } if status.is_client_error() => Self::Rejected(status, problem),
            UpstreamError::CircuitOpen { .. } => Self::Unavailable {
                message,
                maybe_done: false,
            },
            UpstreamError::Unreachable { source, .. } => Self::Unavailable {
                message,
                maybe_done: !source.is_connect(),
            },
            _ => Self::Unavailable {
                message,
                maybe_done: true,
            },
        }
    }
}

/// The span of the step that leaves `step`, a child of the span that is current: the checkout
/// request's, or a resumed saga's.
fn step_span(step: Step, order_id: &str) -> tracing::Span {
    let name = match step {
        Step::Placed => "reserve",
        Step::Reserved => "quote",
        Step::Quoted => "charge",
        Step::Charged => "commit",
        Step::Committed => "ship",
        Step::Shipped => "confirm",
        Step::Compensating | Step::Confirmed | Step::Failed => "compensate",
    };
    let span = tracing::info_span!(
        "saga step",
        otel.name = %format_args!("saga {name}"),
        step = name,
        order_id,
        trace_id = tracing::field::Empty,
    );
    propagation::record_trace_id(&span);
    span
}

/// The last segment of a problem type (`https://shop.dev/problems/insufficient-stock`).
fn problem_kind(problem: Option<&Problem>) -> &str {
    problem
        .map(|p| p.kind.rsplit('/').next().unwrap_or_default())
        .unwrap_or_default()
}

fn rejected_message(service: &str, status: StatusCode, problem: Option<&Problem>) -> String {
    let detail = problem.and_then(|p| p.detail.clone()).unwrap_or_default();
    format!("the {service} service refused the request ({status}): {detail}")
}

/// A step's result: go on with the progress it made, or fail the order.
enum StepResult {
    Done(Progress),
    Fail {
        code: &'static str,
        reason: String,
        errors: Vec<FieldError>,
        payment_check: bool,
    },
    Wait,
}

fn fail(code: &'static str, reason: impl Into<String>) -> StepResult {
    StepResult::Fail {
        code,
        reason: reason.into(),
        errors: Vec::new(),
        payment_check: false,
    }
}

impl Saga {
    /// Reads the caller's cart and prices every line from the catalog as it is now.
    pub async fn priced_cart(&self, caller: &Caller) -> Result<Vec<OrderItem>, Problem> {
        let request = self
            .upstreams
            .cart
            .request(Method::GET, CART_PATH)
            .header(USER_ID_HEADER, caller.user_id.to_string())
            .header(USER_ROLES_HEADER, caller.roles.join(","));
        let cart: Cart = self.upstreams.cart.json(request).await.map_err(|e| {
            tracing::warn!(error = %e, "reading the cart failed");
            Problem::unavailable("the cart cannot be read right now; nothing was ordered")
        })?;
        // Every line priced at once: a cart of 20 lines is one round trip's wait, not 20.
        let prices = futures_util::future::join_all(cart.items.iter().map(|line| async move {
            self.upstreams
                .catalog
                .get_json::<Product>(&product_path(&line.product_id))
                .await
        }))
        .await;
        let mut items = Vec::with_capacity(cart.items.len());
        for (line, price) in cart.items.into_iter().zip(prices) {
            let product = match price {
                Ok(product) => product,
                // The request is fine; the cart holds what is no longer sold: a conflict with
                // the cart's state.
                Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {
                    return Err(Problem::typed(
                        StatusCode::CONFLICT,
                        "unknown-product",
                        format!(
                            "the cart holds product {}, which is no longer sold; remove it and check out again",
                            line.product_id
                        ),
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pricing the cart failed");
                    return Err(Problem::unavailable(
                        "the catalog cannot price the cart right now; nothing was ordered",
                    ));
                }
            };
            items.push(OrderItem {
                product_id: product.id,
                name: product.name,
                quantity: line.quantity,
                unit_price: product.price,
            });
        }
        Ok(items)
    }

    /// Runs the order's saga as `runner` as far as it can go. `card` is the request's card; the
    /// resumer has none.
    pub async fn run(
        &self,
        order_id: &str,
        runner: &str,
        card: Option<&PaymentDetails>,
    ) -> Stopped {
        self.run_from(None, order_id, runner, card).await.0
    }

    /// [`Saga::run`] from `placed` (the order as stored, read here when `None`). When it finishes,
    /// also the order as its last write stored it: the checkout answers with it.
    pub async fn run_from(
        &self,
        placed: Option<SagaState>,
        order_id: &str,
        runner: &str,
        card: Option<&PaymentDetails>,
    ) -> (Stopped, Option<SagaState>) {
        // Read once; each step's write is conditional on the step and the runner, so the copy in
        // memory only moves with the writes that succeeded (re-read after a failure is recorded).
        // The writes that end the saga return the row, which replaces the copy.
        let mut state = placed;
        loop {
            match self.next(&mut state, order_id, runner, card).await {
                Ok(None) => continue,
                Ok(Some(Stopped::Finished)) => return (Stopped::Finished, state),
                Ok(Some(stopped)) => return (stopped, None),
                Err(e) => {
                    // The database failed: leave the order as persisted; the resumer continues it.
                    tracing::warn!(order_id, error = %e, "the saga stopped on a database error");
                    return (Stopped::Waiting, None);
                }
            }
        }
    }

    /// Does one step on `cached` (the order as persisted, read when `None`). `None`: go on with
    /// the next.
    async fn next(
        &self,
        cached: &mut Option<SagaState>,
        order_id: &str,
        runner: &str,
        card: Option<&PaymentDetails>,
    ) -> Result<Option<Stopped>, sqlx::Error> {
        if cached.is_none() {
            *cached = self.store.state(order_id).await?;
        }
        let Some(state) = cached.as_mut() else {
            return Ok(Some(Stopped::Lost));
        };
        if state.runner != runner {
            return Ok(Some(Stopped::Lost));
        }
        let step = state.order.step;
        if step.is_terminal() {
            return Ok(Some(Stopped::Finished));
        }
        let span = step_span(step, order_id);
        if step == Step::Compensating {
            return self.compensate(state, runner).instrument(span).await;
        }
        let started = std::time::Instant::now();
        let (to, result) = async {
            match step {
                Step::Placed => (Step::Reserved, self.reserve(state, card.is_some()).await),
                Step::Reserved => (Step::Quoted, self.quote(state).await),
                Step::Quoted => (Step::Charged, self.charge(state, card).await),
                Step::Charged => (Step::Committed, self.commit(state).await),
                Step::Committed => (Step::Shipped, self.ship(state).await),
                Step::Shipped => (Step::Confirmed, StepResult::Done(Progress::default())),
                Step::Compensating | Step::Confirmed | Step::Failed => {
                    unreachable!("handled above")
                }
            }
        }
        .instrument(span)
        .await;
        if step != Step::Shipped {
            // Shipped → Confirmed calls nothing: not a step worth timing.
            self.metrics.step(to, started.elapsed().as_secs_f64());
        }
        match result {
            StepResult::Done(progress) => {
                match self
                    .store
                    .advance(order_id, runner, step, to, progress.clone())
                    .await?
                {
                    Advanced::Lost => return Ok(Some(Stopped::Lost)),
                    Advanced::Recorded => state.advanced(to, progress),
                    Advanced::Confirmed(confirmed) => *state = *confirmed,
                }
                if to == Step::Confirmed {
                    self.relay.wake();
                    self.metrics.confirmed();
                }
                if self.crash_point(to) {
                    return Ok(Some(Stopped::Halted));
                }
                if to == Step::Confirmed {
                    // The cart is emptied by its own consumer of `order.confirmed`: once, and only
                    // of what this order bought.
                    return Ok(Some(Stopped::Finished));
                }
                Ok(None)
            }
            StepResult::Wait => Ok(Some(Stopped::Waiting)),
            StepResult::Fail {
                code,
                reason,
                errors,
                payment_check,
            } => {
                tracing::info!(
                    order_id,
                    step = step.as_str(),
                    code,
                    "checkout failed; compensating"
                );
                let failure = Failure {
                    reason_code: code,
                    reason: &reason,
                    errors: &errors,
                    payment_check,
                };
                if !self
                    .store
                    .start_compensating(order_id, runner, step, failure)
                    .await?
                {
                    return Ok(Some(Stopped::Lost));
                }
                *cached = None;
                if self.crash_point(Step::Compensating) {
                    return Ok(Some(Stopped::Halted));
                }
                Ok(None)
            }
        }
    }

    /// The test hook: die (or halt) right after persisting the named step. True: halt here.
    pub(crate) fn crash_point(&self, step: Step) -> bool {
        if self.crash_at != Some(step) {
            return false;
        }
        if self.crash == Crash::Halt {
            return true;
        }
        tracing::error!(
            step = step.as_str(),
            "SHOP_ORDER_CRASH_AT: killing this process (a test hook)"
        );
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        true
    }

    async fn reserve(&self, state: &SagaState, live: bool) -> StepResult {
        let order = &state.order;
        if !live {
            return fail(
                reason::CHECKOUT_INTERRUPTED,
                "the checkout was interrupted before payment; nothing was charged, please check out again",
            );
        }
        // Fail fast, before holding any stock, when payment cannot take the charge anyway: the
        // breaker answers at once when open, a stopped server refuses the connection at once.
        let probe = self.upstreams.payment.request(Method::GET, "/readyz");
        let ready = self.upstreams.payment.send(probe).await;
        if !ready.as_ref().is_ok_and(|r| r.status().is_success()) {
            if let Err(e) = &ready {
                tracing::warn!(error = %e, "payment is unavailable");
            }
            return fail(
                reason::PAYMENT_UNAVAILABLE,
                "payment is unavailable right now; nothing was reserved or charged, try again shortly",
            );
        }
        let body = ReserveRequest {
            order_id: OrderId::parse_or_nil(&order.id),
            items: order
                .items
                .iter()
                .map(|i| ReserveItem {
                    product_id: ProductId::parse_or_nil(&i.product_id),
                    quantity: i.quantity,
                })
                .collect(),
            ttl_seconds: None,
        };
        let inventory = &self.upstreams.inventory;
        let request = inventory
            .request(Method::POST, inventory::RESERVATIONS_PATH)
            .json(&body);
        match inventory
            .json::<Reservation>(request)
            .await
            .map_err(CallError::from)
        {
            Ok(_) => StepResult::Done(Progress::default()),
            Err(CallError::Rejected(StatusCode::CONFLICT, problem))
                if problem_kind(problem.as_ref()) == inventory::INSUFFICIENT_STOCK =>
            {
                let errors = problem.map(|p| p.errors).unwrap_or_default();
                StepResult::Fail {
                    code: reason::OUT_OF_STOCK,
                    reason: "not enough stock for every item; nothing was reserved or charged"
                        .into(),
                    errors,
                    payment_check: false,
                }
            }
            Err(CallError::Rejected(status, problem)) => fail(
                reason::UPSTREAM_UNAVAILABLE,
                rejected_message("inventory", status, problem.as_ref()),
            ),
            Err(CallError::Unavailable { message, .. }) => {
                tracing::warn!(order_id = order.id, error = message, "reserving failed");
                fail(
                    reason::UPSTREAM_UNAVAILABLE,
                    "the inventory is unavailable right now; nothing was charged, try again shortly",
                )
            }
        }
    }

    fn parcel(state: &SagaState) -> Vec<Item> {
        state
            .order
            .items
            .iter()
            .map(|i| Item {
                product_id: ProductId::parse_or_nil(&i.product_id),
                quantity: i.quantity,
                weight_grams: None,
            })
            .collect()
    }

    async fn quote(&self, state: &SagaState) -> StepResult {
        let order = &state.order;
        let shipping = &self.upstreams.shipping;
        let body = QuoteRequest {
            items: Self::parcel(state),
            address: order.shipping_address.clone(),
            currency: order.currency.clone(),
        };
        let request = shipping
            .request(Method::POST, shipping::QUOTES_PATH)
            .json(&body);
        match shipping
            .json::<Quote>(request)
            .await
            .map_err(CallError::from)
        {
            Ok(quote) if quote.amount.currency == order.currency => StepResult::Done(Progress {
                quote: Some(quote),
                ..Progress::default()
            }),
            Ok(_) => fail(
                reason::UPSTREAM_UNAVAILABLE,
                "shipping quoted in another currency than the order's",
            ),
            Err(CallError::Rejected(status, problem)) => fail(
                reason::UPSTREAM_UNAVAILABLE,
                rejected_message("shipping", status, problem.as_ref()),
            ),
            Err(CallError::Unavailable { message, .. }) => {
                tracing::warn!(order_id = order.id, error = message, "quoting failed");
                fail(
                    reason::UPSTREAM_UNAVAILABLE,
                    "shipping is unavailable right now; nothing was charged, try again shortly",
                )
            }
        }
    }

    async fn charge(&self, state: &SagaState, card: Option<&PaymentDetails>) -> StepResult {
        let order = &state.order;
        let payment = &self.upstreams.payment;
        let Some(card) = card else {
            // Resumed: the charge is only known to payment (a crash after the call).
            return self.charge_outcome_from_payment(state).await;
        };
        let body = ChargeRequest {
            order_id: OrderId::parse_or_nil(&order.id),
            amount: order.total.clone(),
            card: Card {
                number: card.card_number.clone(),
                exp_month: card.exp_month,
                exp_year: card.exp_year,
                cvc: card.cvc.clone(),
            },
        };
        let request = payment
            .request(Method::POST, payment::CHARGES_PATH)
            .header(idempotency::HEADER, domain::charge_key(&order.id))
            .json(&body);
        let response = match payment.send(request).await {
            Ok(response) => response,
            Err(e) => {
                let CallError::Unavailable {
                    message,
                    maybe_done,
                } = CallError::from(e)
                else {
                    unreachable!("send answers every status")
                };
                tracing::warn!(order_id = order.id, error = message, "charging failed");
                return StepResult::Fail {
                    code: reason::PAYMENT_UNAVAILABLE,
                    reason:
                        "payment is unavailable right now; nothing was charged, try again shortly"
                            .into(),
                    errors: Vec::new(),
                    payment_check: maybe_done,
                };
            }
        };
        let status = response.status();
        if status.is_success() {
            return match response.json::<ChargeCreated>().await {
                Ok(charge) if charge.status == ChargeStatus::Succeeded => {
                    StepResult::Done(Progress {
                        charge_id: Some(charge.charge_id),
                        ..Progress::default()
                    })
                }
                _ => StepResult::Fail {
                    code: reason::PAYMENT_UNAVAILABLE,
                    reason: "payment answered in a way the order service cannot read".into(),
                    errors: Vec::new(),
                    payment_check: true,
                },
            };
        }
        if status == StatusCode::PAYMENT_REQUIRED {
            let code = match response.json::<Declined>().await {
                Ok(p) if p.code == reason::INSUFFICIENT_FUNDS => reason::INSUFFICIENT_FUNDS,
                _ => reason::CARD_DECLINED,
            };
            let reason = if code == reason::INSUFFICIENT_FUNDS {
                "the card has insufficient funds; nothing was charged"
            } else {
                "the card was declined; nothing was charged"
            };
            return fail(code, reason);
        }
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            return fail(reason::INVALID_CARD, "payment did not accept the card");
        }
        // 409 (the key still in progress) and 5xx: the charge may or may not exist.
        tracing::warn!(order_id = order.id, %status, "charging failed");
        StepResult::Fail {
            code: reason::PAYMENT_UNAVAILABLE,
            reason: "payment is unavailable right now; try again shortly".into(),
            errors: Vec::new(),
            payment_check: true,
        }
    }

    async fn charges(&self, order_id: &str) -> Result<ChargeList, CallError> {
        self.upstreams
            .payment
            .get_json(&payment::charges_of_order_path(order_id))
            .await
            .map_err(CallError::from)
    }

    /// A resumed saga at `quoted`: go on if payment has the charge, fail as it did if it was
    /// declined, and compensate if it was never made (the card is gone).
    async fn charge_outcome_from_payment(&self, state: &SagaState) -> StepResult {
        match self.charges(&state.order.id).await {
            Ok(list) => {
                if let Some(charge) = list
                    .items
                    .iter()
                    .find(|c| c.status == ChargeStatus::Succeeded)
                {
                    return StepResult::Done(Progress {
                        charge_id: Some(charge.charge_id.clone()),
                        ..Progress::default()
                    });
                }
                match list.items.iter().find_map(|c| c.failure_code.as_deref()) {
                    Some(reason::INSUFFICIENT_FUNDS) => fail(
                        reason::INSUFFICIENT_FUNDS,
                        "the card has insufficient funds; nothing was charged",
                    ),
                    Some(_) => fail(
                        reason::CARD_DECLINED,
                        "the card was declined; nothing was charged",
                    ),
                    None => fail(
                        reason::CHECKOUT_INTERRUPTED,
                        "the checkout was interrupted before payment; nothing was charged, please check out again",
                    ),
                }
            }
            // Not now: the resumer asks again after the lease.
            Err(_) => StepResult::Wait,
        }
    }

    async fn commit(&self, state: &SagaState) -> StepResult {
        let order = &state.order;
        let inventory = &self.upstreams.inventory;
        let request = inventory.request(Method::POST, &inventory::commit_path(&order.id));
        match inventory
            .json::<Reservation>(request)
            .await
            .map_err(CallError::from)
        {
            Ok(_) => StepResult::Done(Progress::default()),
            Err(CallError::Rejected(StatusCode::CONFLICT | StatusCode::NOT_FOUND, _)) => fail(
                reason::RESERVATION_LOST,
                "the stock held for the order expired before it was paid; the charge is refunded",
            ),
            Err(CallError::Rejected(status, problem)) => fail(
                reason::UPSTREAM_UNAVAILABLE,
                rejected_message("inventory", status, problem.as_ref()),
            ),
            // The commit may have happened with its answer lost (inventory commits, then its
            // database goes away before it answers: a 503 for a commit that stands). Committed
            // stock cannot be released, so compensating would sell it for nothing: ask again
            // later. Committing is idempotent, and a hold that expires meanwhile answers 409.
            Err(CallError::Unavailable {
                message,
                maybe_done: true,
            }) => {
                tracing::warn!(
                    order_id = order.id,
                    error = message,
                    "committing may have failed; asking again later"
                );
                StepResult::Wait
            }
            // Never sent (refused, or the breaker open): nothing was committed.
            Err(CallError::Unavailable { message, .. }) => {
                tracing::warn!(order_id = order.id, error = message, "committing failed");
                fail(
                    reason::UPSTREAM_UNAVAILABLE,
                    "the inventory is unavailable right now; the charge is refunded, try again shortly",
                )
            }
        }
    }

    async fn ship(&self, state: &SagaState) -> StepResult {
        let order = &state.order;
        let Some(quote) = state.quote.clone() else {
            return fail(reason::SHIPPING_FAILED, "the order has no shipping quote");
        };
        let shipping = &self.upstreams.shipping;
        let body = CreateShipment {
            order_id: OrderId::parse_or_nil(&order.id),
            user_id: UserId::parse_or_nil(&order.user_id),
            items: Self::parcel(state),
            address: order.shipping_address.clone(),
            quote,
        };
        let request = shipping
            .request(Method::POST, shipping::SHIPMENTS_PATH)
            .json(&body);
        match shipping
            .json::<Shipment>(request)
            .await
            .map_err(CallError::from)
        {
            Ok(shipment) => StepResult::Done(Progress {
                tracking_number: Some(shipment.tracking_number),
                ..Progress::default()
            }),
            Err(CallError::Rejected(status, problem)) => fail(
                reason::SHIPPING_FAILED,
                rejected_message("shipping", status, problem.as_ref()),
            ),
            // The stock has left the warehouse and is paid for: retry, never compensate.
            Err(CallError::Unavailable { message, .. }) => {
                tracing::warn!(
                    order_id = order.id,
                    error = message,
                    "creating the shipment failed; retrying later"
                );
                StepResult::Wait
            }
        }
    }

    /// Releases the reservation and refunds any charge, then ends the order FAILED. Stops
    /// (waiting for the resumer) while a service it needs is unavailable.
    async fn compensate(
        &self,
        state: &mut SagaState,
        runner: &str,
    ) -> Result<Option<Stopped>, sqlx::Error> {
        let started = std::time::Instant::now();
        let order = &state.order;
        let inventory = &self.upstreams.inventory;
        let request = inventory.request(Method::POST, &inventory::release_path(&order.id));
        match inventory
            .json::<Reservation>(request)
            .await
            .map_err(CallError::from)
        {
            Ok(_) | Err(CallError::Rejected(StatusCode::NOT_FOUND, _)) => {}
            Err(CallError::Rejected(status, problem)) => {
                // Committed stock cannot be released; inventory has no way back for it.
                tracing::warn!(order_id = order.id, %status, detail = ?problem.and_then(|p| p.detail), "could not release the reservation");
            }
            Err(CallError::Unavailable { message, .. }) => {
                tracing::warn!(
                    order_id = order.id,
                    error = message,
                    "releasing failed; retrying later"
                );
                return Ok(Some(Stopped::Waiting));
            }
        }
        if state.charge_id.is_some() || state.payment_check {
            let charges = match self.charges(&order.id).await {
                Ok(list) => list.items,
                Err(_) => return Ok(Some(Stopped::Waiting)),
            };
            for charge in charges {
                let left = charge.amount.amount - charge.refunded;
                if charge.status != ChargeStatus::Succeeded || left <= 0 {
                    continue;
                }
                let request = self
                    .upstreams
                    .payment
                    .request(Method::POST, &payment::refunds_path(&charge.charge_id))
                    .header(idempotency::HEADER, domain::refund_key(&charge.charge_id))
                    .json(&RefundRequest {
                        amount: Money::new(left, &charge.amount.currency),
                    });
                match self
                    .upstreams
                    .payment
                    .json::<RefundCreated>(request)
                    .await
                    .map_err(CallError::from)
                {
                    Ok(_) => {}
                    Err(CallError::Rejected(status, problem)) => {
                        tracing::error!(order_id = order.id, charge_id = charge.charge_id, %status, detail = ?problem.and_then(|p| p.detail), "the refund was refused");
                    }
                    Err(CallError::Unavailable { .. }) => return Ok(Some(Stopped::Waiting)),
                }
            }
        }
        let Some(failed) = self.store.finish_failed(&order.id, runner).await? else {
            return Ok(Some(Stopped::Lost));
        };
        *state = failed;
        self.relay.wake();
        self.metrics
            .step(Step::Compensating, started.elapsed().as_secs_f64());
        self.metrics.failed(state.order.reason_code.as_deref());
        if self.crash_point(Step::Failed) {
            return Ok(Some(Stopped::Halted));
        }
        Ok(Some(Stopped::Finished))
    }
}

/// Takes over every unfinished order not updated within `lease` and runs each to its end (or
/// until it has to wait again). Returns how many it took.
pub async fn resume_once(saga: &Saga, lease: Duration) -> Result<usize, sqlx::Error> {
    let stale_before = rfc3339_before(lease);
    let runner = Uuid::new_v4().to_string();
    let taken = saga
        .store
        .take_over_stale(&stale_before, &runner, 100)
        .await?;
    let count = taken.len();
    let mut runs = tokio::task::JoinSet::new();
    for order_id in taken {
        let saga = saga.clone();
        let runner = runner.clone();
        // The checkout request is gone: a trace of its own, linked to the checkout's.
        let span = tracing::info_span!(
            parent: None,
            "saga resume",
            order_id,
            trace_id = tracing::field::Empty,
            linked_trace_id = tracing::field::Empty,
        );
        if let Some(checkout) = saga.store.checkout_trace(&order_id).await? {
            propagation::link(&span, &checkout);
        }
        propagation::record_trace_id(&span);
        runs.spawn(
            async move {
                let stopped = saga.run(&order_id, &runner, None).await;
                tracing::info!(order_id, ?stopped, "resumed an unfinished order");
            }
            .instrument(span),
        );
    }
    while runs.join_next().await.is_some() {}
    Ok(count)
}

/// The time `ago` before now, formatted as the kit's timestamps, so text order is time order.
fn rfc3339_before(ago: Duration) -> String {
    shop_kit::db::rfc3339(time::OffsetDateTime::now_utc() - ago)
}
