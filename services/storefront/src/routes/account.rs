//! Registering, signing in (which merges the guest cart) and out.

use super::*;

#[derive(Debug, Deserialize)]
pub(super) struct NextQuery {
    next: Option<String>,
}

pub(super) async fn register_form(
    Extension(v): Extension<Visitor>,
    Query(q): Query<NextQuery>,
) -> Response {
    pages::render(
        StatusCode::OK,
        &RegisterPage {
            layout: layout(&v, "Create an account"),
            notice: None,
            name: String::new(),
            email: String::new(),
            next: local_path(q.next.as_deref()),
        },
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RegisterForm {
    name: String,
    email: String,
    password: String,
    next: Option<String>,
}

pub(super) async fn register(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Form(form): Form<RegisterForm>,
) -> Response {
    let next = local_path(form.next.as_deref());
    let again = |status, notice| {
        pages::render(
            status,
            &RegisterPage {
                layout: layout(&v, "Create an account"),
                notice: Some(notice),
                name: form.name.clone(),
                email: form.email.clone(),
                next: next.clone(),
            },
        )
    };
    match app
        .api
        .register(form.name.trim(), form.email.trim(), &form.password)
        .await
    {
        Ok(()) => {}
        Err(ApiError::Rejected {
            status: StatusCode::CONFLICT,
            ..
        }) => {
            return again(
                StatusCode::CONFLICT,
                Notice::alert("An account with this email exists already: sign in instead."),
            );
        }
        Err(ApiError::Rejected {
            status, problem, ..
        }) => return again(status, check_fields(&problem)),
        Err(e) => return failure(&v, e, "Registration"),
    }
    match app.api.login(form.email.trim(), &form.password).await {
        Ok(tokens) => signed_in(&app, &v, tokens, &next).await,
        Err(e) => failure(&v, e, "Signing in"),
    }
}

pub(super) async fn signin_form(
    Extension(v): Extension<Visitor>,
    Query(q): Query<NextQuery>,
) -> Response {
    pages::render(
        StatusCode::OK,
        &SignInPage {
            layout: layout(&v, "Sign in"),
            notice: None,
            email: String::new(),
            next: local_path(q.next.as_deref()),
        },
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct SignInForm {
    email: String,
    password: String,
    next: Option<String>,
}

pub(super) async fn signin(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Form(form): Form<SignInForm>,
) -> Response {
    let next = local_path(form.next.as_deref());
    let again = |status, text: &str| {
        pages::render(
            status,
            &SignInPage {
                layout: layout(&v, "Sign in"),
                notice: Some(Notice::alert(text)),
                email: form.email.clone(),
                next: next.clone(),
            },
        )
    };
    match app.api.login(form.email.trim(), &form.password).await {
        Ok(tokens) => signed_in(&app, &v, tokens, &next).await,
        Err(ApiError::Unauthorized) => again(StatusCode::UNAUTHORIZED, "Wrong email or password."),
        Err(ApiError::Rejected {
            status: StatusCode::TOO_MANY_REQUESTS,
            ..
        }) => again(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts for this account: wait a minute and try again.",
        ),
        Err(ApiError::Rejected {
            status, problem, ..
        }) => again(status, &check_fields(&problem).details.join("; ")).into_response(),
        Err(e) => failure(&v, e, "Signing in"),
    }
}

/// Sets the session cookies, moves the guest cart into the account's cart, and goes on.
pub(super) async fn signed_in(
    app: &App,
    v: &Visitor,
    tokens: crate::api::Tokens,
    next: &str,
) -> Response {
    if !v.guest_cart.is_empty() {
        merge_guest_cart(app, &tokens.access_token, &v.guest_cart).await;
    }
    let mut response = see_other(next);
    for (name, value) in [
        (session::ACCESS_COOKIE, Some(tokens.access_token.as_str())),
        (session::REFRESH_COOKIE, Some(tokens.refresh_token.as_str())),
        (session::GUEST_CART_COOKIE, None),
    ] {
        response = with_cookie(response, app.cookies.set(name, value));
    }
    response
}

/// Adds each guest line to the account's cart (quantities add up, to the cart's limit). A line
/// that cannot be added (a product no longer sold) is left out; the rest still move.
pub(super) async fn merge_guest_cart(app: &App, token: &str, lines: &[GuestLine]) {
    let current = match app.api.cart(token).await {
        Ok(cart) => cart.items,
        Err(e) => {
            tracing::warn!(error = ?e, "the guest cart was not merged: the cart is unavailable");
            return;
        }
    };
    for line in lines {
        let existing = current
            .iter()
            .find(|l| l.product_id == line.product_id)
            .map_or(0, |l| l.quantity);
        let quantity = (existing + line.quantity).min(MAX_QUANTITY);
        if let Err(e) = app
            .api
            .set_cart_item(token, &line.product_id, quantity)
            .await
        {
            tracing::info!(product_id = %line.product_id, error = ?e, "a guest cart line was not merged");
        }
    }
}

pub(super) async fn signout(State(app): State<App>, headers: HeaderMap) -> Response {
    // The sign-in ends at the user service too: its refresh tokens are revoked, so a copy of
    // the cookie is worth nothing. The cookies go whatever the API answers.
    if let Some(refresh_token) = session::refresh_token(&headers)
        && let Err(e) = app.api.logout(refresh_token).await
    {
        tracing::warn!(error = ?e, "signing out at the user service failed; the cookies are cleared anyway");
    }
    let mut response = see_other("/");
    for name in [session::ACCESS_COOKIE, session::REFRESH_COOKIE] {
        response = with_cookie(response, app.cookies.set(name, None));
    }
    response
}
