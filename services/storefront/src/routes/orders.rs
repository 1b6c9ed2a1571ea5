//! Checkout, orders, the inbox and parcel tracking.

use super::*;

pub(super) fn test_cards() -> Vec<(&'static str, &'static str)> {
    use shop_contracts::test_cards::*;
    vec![
        (SUCCEEDS, "succeeds"),
        (DECLINED, "is declined"),
        (INSUFFICIENT_FUNDS, "has insufficient funds"),
    ]
}

pub(super) fn this_year() -> i32 {
    time::OffsetDateTime::now_utc().year()
}

pub(super) async fn checkout_page(
    app: &App,
    v: &Visitor,
    status: StatusCode,
    notice: Option<Notice>,
    address: AddressForm,
) -> Response {
    let Some(_) = v.signed_in() else {
        return sign_in_then("/checkout");
    };
    let (lines, total, cart_unavailable) = match cart_lines(app, v).await {
        Ok((lines, total)) => (lines, total, false),
        Err(ApiError::Unauthorized) => return sign_in_then("/checkout"),
        // The form still shows: the order service reads the cart itself at checkout.
        Err(_) => (Vec::new(), None, true),
    };
    pages::render(
        status,
        &CheckoutPage {
            layout: layout(v, "Checkout"),
            notice,
            lines,
            total,
            cart_unavailable,
            address,
            idempotency_key: uuid::Uuid::new_v4().to_string(),
            test_cards: test_cards(),
            next_year: this_year() + 1,
        },
    )
}

pub(super) async fn checkout_form(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
) -> Response {
    checkout_page(&app, &v, StatusCode::OK, None, AddressForm::default()).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct CheckoutForm {
    name: String,
    line1: String,
    line2: String,
    city: String,
    postal_code: String,
    country: String,
    card_number: String,
    exp_month: String,
    exp_year: String,
    cvc: String,
    idempotency_key: String,
}

/// What to tell the buyer when the order service refused or failed the checkout.
pub(super) fn refusal(
    status: StatusCode,
    reason_code: Option<&str>,
    problem: &shop_kit::Problem,
) -> Notice {
    let detail = problem.detail.clone().unwrap_or_default();
    match reason_code {
        Some("card_declined") => {
            Notice::alert("Your card was declined. Nothing was charged: try another card.")
        }
        Some("insufficient_funds") => Notice::alert(
            "Your card has insufficient funds. Nothing was charged: try another card.",
        ),
        Some("out_of_stock") | Some("reservation_lost") => Notice::alert(format!(
            "Sorry, some items are no longer in stock ({detail}). Nothing was charged; your cart \
             is kept: change the quantities and try again."
        )),
        _ if status == StatusCode::UNPROCESSABLE_ENTITY => check_fields(problem),
        _ => Notice::alert(if detail.is_empty() {
            "The order could not be placed.".to_owned()
        } else {
            format!("The order could not be placed: {detail}")
        }),
    }
}

pub(super) async fn checkout(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Form(form): Form<CheckoutForm>,
) -> Response {
    let Some(token) = v.signed_in() else {
        return sign_in_then("/checkout");
    };
    let address = AddressForm {
        name: form.name.trim().to_owned(),
        line1: form.line1.trim().to_owned(),
        line2: form.line2.trim().to_owned(),
        city: form.city.trim().to_owned(),
        postal_code: form.postal_code.trim().to_owned(),
        country: form.country.trim().to_ascii_uppercase(),
    };
    let (Ok(exp_month), Ok(exp_year)) = (
        form.exp_month.trim().parse::<i64>(),
        form.exp_year.trim().parse::<i64>(),
    ) else {
        let notice =
            Notice::alert("The expiry month and year must be numbers, such as 12 and 2030.");
        return checkout_page(
            &app,
            &v,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(notice),
            address,
        )
        .await;
    };
    let card_number: String = form
        .card_number
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    // The key the form was shown with, so sending it twice places one order; a key that is not
    // one of ours is replaced (the order is then simply not deduplicated).
    let key = uuid(&form.idempotency_key).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let input = CheckoutInput {
        name: &address.name,
        line1: &address.line1,
        line2: &address.line2,
        city: &address.city,
        postal_code: &address.postal_code,
        country: &address.country,
        card_number: &card_number,
        exp_month,
        exp_year,
        cvc: form.cvc.trim(),
    };
    match app.api.checkout(token, &key, &input).await {
        Ok(Checkout::Placed { order_id }) => see_other(&format!("/orders/{order_id}?placed=1")),
        Ok(Checkout::Refused {
            status,
            reason_code,
            problem,
        }) => {
            let notice = refusal(status, reason_code.as_deref(), &problem);
            checkout_page(&app, &v, status, Some(notice), address).await
        }
        Err(ApiError::Unauthorized) => sign_in_then("/checkout"),
        Err(_) => {
            let notice = Notice::alert(
                "Payment is unavailable right now; please try again later. Nothing was charged \
                 and your cart is kept.",
            );
            checkout_page(
                &app,
                &v,
                StatusCode::SERVICE_UNAVAILABLE,
                Some(notice),
                address,
            )
            .await
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct CursorQuery {
    cursor: Option<String>,
}

pub(super) async fn orders(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Query(params): Query<CursorQuery>,
) -> Response {
    let Some(token) = v.signed_in() else {
        return sign_in_then("/orders");
    };
    match app.api.orders(token, params.cursor.as_deref()).await {
        Ok(page) => pages::render(
            StatusCode::OK,
            &OrdersPage {
                layout: layout(&v, "Your orders"),
                orders: page
                    .items
                    .iter()
                    .map(|o| OrderSummary {
                        id: o.id.clone(),
                        status: o.status.clone(),
                        total: money(&o.total),
                        created: when(&o.created_at),
                    })
                    .collect(),
                next: page
                    .next_cursor
                    .map(|c| format!("/orders?{}", query(&[("cursor", &c)]))),
            },
        ),
        Err(e) => failure(&v, e, "Your orders"),
    }
}

/// A saga step or a shipment status, as a person would say it.
pub(super) fn step_label(step: &str) -> String {
    match step {
        "placed" => "Order placed",
        "reserved" => "Stock reserved",
        "quoted" => "Shipping priced",
        "charged" => "Card charged",
        "committed" => "Stock committed",
        "shipped" => "Shipment created",
        "confirmed" => "Confirmed",
        "compensating" => "Undoing what was done (stock released, charge refunded)",
        "failed" => "Failed",
        "label_created" => "Label created",
        "in_transit" => "In transit",
        "out_for_delivery" => "Out for delivery",
        "delivered" => "Delivered",
        "cancelled" => "Cancelled",
        "returned" => "Returned",
        other => other,
    }
    .to_owned()
}

#[derive(Debug, Deserialize)]
pub(super) struct OrderQuery {
    placed: Option<String>,
}

pub(super) async fn order(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Path(id): Path<String>,
    Query(params): Query<OrderQuery>,
) -> Response {
    let Some(token) = v.signed_in() else {
        return sign_in_then(&format!("/orders/{}", uuid(&id).unwrap_or_default()));
    };
    let Some(id) = uuid(&id) else {
        return not_found_page(&v, "That order");
    };
    let order = match app.api.order(token, &id).await {
        Ok(order) => order,
        // Another customer's order is "not found" too: its existence is not the visitor's
        // business.
        Err(ApiError::Rejected {
            status: StatusCode::FORBIDDEN,
            ..
        }) => {
            return not_found_page(&v, "That order");
        }
        Err(e) => return failure(&v, e, "That order"),
    };
    let shipment = match &order.tracking_number {
        Some(number) => Some(match app.api.tracking(Some(token), number).await {
            Ok(t) => format!("{}: {} item(s)", step_label(&t.status), t.items_count),
            Err(_) => "The shipment's status cannot be shown right now.".to_owned(),
        }),
        None => None,
    };
    let pending = order.status == "PENDING";
    let notice = params.placed.and_then(|_| match order.status.as_str() {
        "CONFIRMED" => Some(Notice::status("Thank you! Your order is confirmed.")),
        "PENDING" => Some(Notice::status("Thank you! We are confirming your order.")),
        _ => None,
    });
    pages::render(
        StatusCode::OK,
        &OrderPage {
            layout: layout(&v, format!("Order {}", order.id)),
            notice,
            id: order.id.clone(),
            status: order.status.clone(),
            pending,
            reason: order.reason.clone(),
            lines: order
                .items
                .iter()
                .map(|l| line_view(String::new(), l.name.clone(), l.quantity, &l.unit_price))
                .collect(),
            subtotal: money(&order.subtotal),
            shipping: order.shipping_cost.as_ref().map(money),
            total: money(&order.total),
            tracking_number: order.tracking_number.clone(),
            steps: order
                .history
                .iter()
                .map(|s| StepView {
                    step: step_label(&s.step),
                    at: when(&s.at),
                })
                .collect(),
            shipment,
        },
    )
}

pub(super) async fn inbox(State(app): State<App>, Extension(v): Extension<Visitor>) -> Response {
    let Some(token) = v.signed_in() else {
        return sign_in_then("/inbox");
    };
    match app.api.notifications(token).await {
        Ok(page) => pages::render(
            StatusCode::OK,
            &InboxPage {
                layout: layout(&v, "Inbox"),
                messages: page
                    .items
                    .into_iter()
                    .map(|m| MessageView {
                        subject: m.subject,
                        body: m.body,
                        at: when(&m.created_at),
                    })
                    .collect(),
            },
        ),
        Err(e) => failure(&v, e, "Your messages"),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct TrackQuery {
    number: Option<String>,
}

pub(super) async fn track(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Query(params): Query<TrackQuery>,
) -> Response {
    let number = params
        .number
        .unwrap_or_default()
        .trim()
        .to_ascii_uppercase();
    let page = |status, notice, tracking| {
        pages::render(
            status,
            &TrackPage {
                layout: layout(&v, "Track a parcel"),
                notice,
                number: number.clone(),
                tracking,
            },
        )
    };
    if number.is_empty() {
        return page(StatusCode::OK, None, None);
    }
    if number.len() > 40
        || !number
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        let notice =
            Notice::alert("That is not a tracking number: they look like SHP-7KQ2-M4XA-PL3D-ZR6B.");
        return page(StatusCode::UNPROCESSABLE_ENTITY, Some(notice), None);
    }
    match app.api.tracking(v.signed_in(), &number).await {
        Ok(t) => page(
            StatusCode::OK,
            None,
            Some(TrackingView {
                number: t.tracking_number,
                status: step_label(&t.status),
                items: t.items_count,
                estimated_days: t.estimated_days,
                history: t
                    .history
                    .iter()
                    .map(|h| StepView {
                        step: step_label(&h.status),
                        at: when(&h.at),
                    })
                    .collect(),
            }),
        ),
        Err(ApiError::NotFound) => page(
            StatusCode::NOT_FOUND,
            Some(Notice::alert("No parcel has that tracking number.")),
            None,
        ),
        Err(ApiError::Unavailable) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Notice::alert(
                "Tracking is unavailable right now; please try again in a moment.",
            )),
            None,
        ),
        Err(e) => failure(&v, e, "Tracking"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_what_happened() {
        let problem = shop_kit::Problem::new(StatusCode::CONFLICT, "short: Classic Atlas");
        assert!(
            refusal(
                StatusCode::PAYMENT_REQUIRED,
                Some("card_declined"),
                &problem
            )
            .text
            .contains("declined")
        );
        assert!(
            refusal(
                StatusCode::PAYMENT_REQUIRED,
                Some("insufficient_funds"),
                &problem
            )
            .text
            .contains("insufficient funds")
        );
        let stock = refusal(StatusCode::CONFLICT, Some("out_of_stock"), &problem);
        assert!(stock.text.contains("no longer in stock") && stock.text.contains("Classic Atlas"));
    }
}
