//! The admin's form on a product page: price and stock.

use super::*;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct AdminSave {
    price: String,
    on_hand: String,
}

pub(super) async fn admin_save(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Path(id): Path<String>,
    Form(form): Form<AdminSave>,
) -> Response {
    let (Some(token), true) = (v.signed_in(), v.is_admin()) else {
        return error(
            &v,
            StatusCode::FORBIDDEN,
            "Admins only",
            "Only the shop's admins can change prices and stock.".to_owned(),
        );
    };
    let Some(id) = uuid(&id) else {
        return not_found_page(&v, "That product");
    };
    let kept = AdminForm {
        price: form.price.clone(),
        on_hand: form.on_hand.clone(),
    };
    let refuse = |text: String, kept| async {
        product_page(
            &app,
            &v,
            &id,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(Notice::alert(text)),
            None,
            Some(kept),
        )
        .await
    };
    let on_hand = match form.on_hand.trim() {
        "" => None,
        raw => match raw.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n),
            _ => return refuse(
                format!(
                    "Enter the units on hand as a whole number, 0 or more (you entered “{raw}”)."
                ),
                kept,
            )
            .await,
        },
    };
    let product = match app.api.product(&id).await {
        Ok(p) => p,
        Err(e) => return failure(&v, e, "That product"),
    };
    // In the product's currency, whose minor units decide how many decimals a price may have.
    let typed = form.price.trim().trim_start_matches(['$', '€', '£']);
    let Some(Money { amount, .. }) = Money::parse_amount(typed, &product.price.currency) else {
        return refuse(
            format!(
                "Enter the price as a number such as 24.90 (you entered “{}”).",
                form.price.trim()
            ),
            kept,
        )
        .await;
    };
    if product.price.amount != amount
        && let Err(e) = app.api.set_price(token, &product, amount).await
    {
        return match e {
            ApiError::Rejected { problem, .. } => {
                refuse(problem.detail.unwrap_or_default(), kept).await
            }
            e => failure(&v, e, "The catalogue"),
        };
    }
    if let Some(on_hand) = on_hand
        && let Err(e) = app.api.set_stock(token, &id, on_hand).await
    {
        return match e {
            ApiError::Rejected { problem, .. } => {
                refuse(problem.detail.unwrap_or_default(), kept).await
            }
            e => failure(&v, e, "The inventory"),
        };
    }
    see_other(&format!("/product/{id}?saved=1"))
}
