//! The cart: a signed-in visitor's through the cart service, a guest's in a cookie.

use super::*;

/// Every field defaults to empty: a missing one is then refused on the page with the others,
/// never by the form decoder's plain-text error.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct AddForm {
    product_id: String,
    quantity: String,
}

/// A quantity as typed: a whole number from `min` to 99.
pub(super) fn parse_quantity(raw: &str, min: i64) -> Result<i64, Notice> {
    match raw.trim().parse::<i64>() {
        Ok(q) if (min..=MAX_QUANTITY).contains(&q) => Ok(q),
        _ => Err(Notice::alert(format!(
            "Enter a whole number from {min} to {MAX_QUANTITY} as the quantity (you entered “{}”).",
            raw.trim()
        ))),
    }
}

pub(super) async fn add_to_cart(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Form(form): Form<AddForm>,
) -> Response {
    let Some(id) = uuid(&form.product_id) else {
        return not_found_page(&v, "That product");
    };
    let quantity = match parse_quantity(&form.quantity, 1) {
        Ok(q) => q,
        Err(notice) => {
            return refused(&app, &v, &id, notice, form.quantity).await;
        }
    };
    let added = format!("/cart?{}", query(&[("added", &id)]));
    match v.signed_in() {
        Some(token) => {
            let current = match app.api.cart(token).await {
                Ok(cart) => cart
                    .items
                    .iter()
                    .find(|l| l.product_id == id)
                    .map_or(0, |l| l.quantity),
                Err(e) => return failure(&v, e, "Your cart"),
            };
            match app
                .api
                .set_cart_item(token, &id, (current + quantity).min(MAX_QUANTITY))
                .await
            {
                Ok(()) => see_other(&added),
                Err(ApiError::NotFound) => not_found_page(&v, "That product"),
                Err(ApiError::Rejected { problem, .. }) => {
                    let notice = Notice::alert(problem.detail.unwrap_or_default());
                    refused(&app, &v, &id, notice, form.quantity).await
                }
                Err(e) => failure(&v, e, "Your cart"),
            }
        }
        None => {
            // A guest: the line goes into the cookie once the product is known to exist.
            if let Err(e) = app.api.product(&id).await {
                return failure(&v, e, "That product");
            }
            let mut lines = v.guest_cart.clone();
            let room = lines.len() < session::GUEST_CART_MAX_LINES;
            match lines.iter_mut().find(|l| l.product_id == id) {
                Some(line) => line.quantity = (line.quantity + quantity).min(MAX_QUANTITY),
                None if room => lines.push(GuestLine {
                    product_id: id.clone(),
                    quantity,
                }),
                None => {
                    let notice = Notice::alert(format!(
                        "A guest cart holds at most {} products; sign in to add more.",
                        session::GUEST_CART_MAX_LINES
                    ));
                    return refused(&app, &v, &id, notice, form.quantity).await;
                }
            }
            with_cookie(see_other(&added), guest_cookie(&app, &lines))
        }
    }
}

/// The product page again, saying why adding it was refused, with the quantity as typed.
async fn refused(app: &App, v: &Visitor, id: &str, notice: Notice, typed: String) -> Response {
    product_page(
        app,
        v,
        id,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some(notice),
        Some(typed),
        None,
    )
    .await
}

pub(super) fn guest_cookie(app: &App, lines: &[GuestLine]) -> HeaderValue {
    let value = session::format_guest_cart(lines);
    app.cookies.set(
        session::GUEST_CART_COOKIE,
        (!value.is_empty()).then_some(value.as_str()),
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct CartQuery {
    added: Option<String>,
}

pub(super) fn line_view(
    product_id: String,
    name: String,
    quantity: i64,
    unit_price: &Money,
) -> CartLineView {
    CartLineView {
        product_id,
        name,
        quantity,
        unit_price: money(unit_price),
        line_total: money(&Money::new(
            unit_price.amount.saturating_mul(quantity),
            &unit_price.currency,
        )),
    }
}

/// The visitor's cart as lines and a total. A guest's lines are priced from the catalog; with
/// the catalog down they are listed without names or prices rather than not at all.
pub(super) async fn cart_lines(
    app: &App,
    v: &Visitor,
) -> Result<(Vec<CartLineView>, Option<String>), ApiError> {
    if let Some(token) = v.signed_in() {
        let cart = app.api.cart(token).await?;
        let lines = cart
            .items
            .iter()
            .map(|l| {
                line_view(
                    l.product_id.clone(),
                    l.name.clone(),
                    l.quantity,
                    &l.unit_price,
                )
            })
            .collect();
        return Ok((lines, cart.total.as_ref().map(money)));
    }
    let mut lines = Vec::new();
    let mut total: Option<Money> = None;
    let mut catalog_down = false;
    for line in &v.guest_cart {
        let product: Option<Product> = if catalog_down {
            None
        } else {
            match app.api.product(&line.product_id).await {
                Ok(p) => Some(p),
                Err(ApiError::NotFound) => continue,
                Err(_) => {
                    catalog_down = true;
                    None
                }
            }
        };
        match product {
            Some(p) => {
                let amount = p.price.amount.saturating_mul(line.quantity);
                total = Some(match total {
                    Some(t) if t.currency == p.price.currency => {
                        Money::new(t.amount + amount, &t.currency)
                    }
                    Some(t) => t,
                    None => Money::new(amount, &p.price.currency),
                });
                lines.push(line_view(
                    line.product_id.clone(),
                    p.name.clone(),
                    line.quantity,
                    &p.price,
                ));
            }
            None => lines.push(CartLineView {
                product_id: line.product_id.clone(),
                name: "A product (details unavailable right now)".to_owned(),
                quantity: line.quantity,
                unit_price: "–".to_owned(),
                line_total: "–".to_owned(),
            }),
        }
    }
    let total = if catalog_down {
        None
    } else {
        total.as_ref().map(money)
    };
    Ok((lines, total))
}

pub(super) async fn cart_page(
    app: &App,
    v: &Visitor,
    status: StatusCode,
    notice: Option<Notice>,
) -> Response {
    match cart_lines(app, v).await {
        Ok((lines, total)) => pages::render(
            status,
            &CartPage {
                layout: layout(v, "Your cart"),
                lines,
                total,
                notice,
            },
        ),
        Err(e) => failure(v, e, "Your cart"),
    }
}

pub(super) async fn cart(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Query(params): Query<CartQuery>,
) -> Response {
    let notice = params.added.map(|_| Notice::status("Added to your cart."));
    cart_page(&app, &v, StatusCode::OK, notice).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct QuantityForm {
    quantity: String,
}

pub(super) async fn update_line(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Path(id): Path<String>,
    Form(form): Form<QuantityForm>,
) -> Response {
    let Some(id) = uuid(&id) else {
        return not_found_page(&v, "That product");
    };
    let quantity = match parse_quantity(&form.quantity, 0) {
        Ok(q) => q,
        Err(notice) => {
            return cart_page(&app, &v, StatusCode::UNPROCESSABLE_ENTITY, Some(notice)).await;
        }
    };
    set_line(&app, &v, &id, quantity).await
}

pub(super) async fn remove_line(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Path(id): Path<String>,
) -> Response {
    let Some(id) = uuid(&id) else {
        return not_found_page(&v, "That product");
    };
    set_line(&app, &v, &id, 0).await
}

/// Sets a line's quantity (0 removes it), then back to the cart.
pub(super) async fn set_line(app: &App, v: &Visitor, id: &str, quantity: i64) -> Response {
    match v.signed_in() {
        Some(token) => {
            let result = if quantity == 0 {
                app.api.remove_cart_item(token, id).await
            } else {
                app.api.set_cart_item(token, id, quantity).await
            };
            match result {
                // Removing a line that is gone already is done.
                Ok(()) => see_other("/cart"),
                Err(ApiError::NotFound) if quantity == 0 => see_other("/cart"),
                // The product is no longer sold: the cart says so instead of ignoring the change.
                Err(ApiError::NotFound) => {
                    let notice = Notice::alert(
                        "That product is no longer sold, so its quantity cannot change; remove it from your cart.",
                    );
                    cart_page(app, v, StatusCode::NOT_FOUND, Some(notice)).await
                }
                Err(ApiError::Rejected { problem, .. }) => {
                    let notice = Notice::alert(problem.detail.unwrap_or_default());
                    cart_page(app, v, StatusCode::UNPROCESSABLE_ENTITY, Some(notice)).await
                }
                Err(e) => failure(v, e, "Your cart"),
            }
        }
        None => {
            let mut lines = v.guest_cart.clone();
            if quantity == 0 {
                lines.retain(|l| l.product_id != id);
            } else if let Some(line) = lines.iter_mut().find(|l| l.product_id == id) {
                line.quantity = quantity;
            }
            with_cookie(see_other("/cart"), guest_cookie(app, &lines))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_whole_numbers_in_range() {
        assert_eq!(parse_quantity(" 3 ", 1).unwrap(), 3);
        assert_eq!(parse_quantity("0", 0).unwrap(), 0);
        for bad in ["0", "-1", "100", "1.5", "two", ""] {
            let notice = parse_quantity(bad, 1).unwrap_err();
            assert!(notice.text.contains("1 to 99"), "{bad}: {}", notice.text);
        }
    }
}
