//! Browsing: the home page, search, categories, product pages, and pages that do not exist.

use super::*;

pub(super) async fn home(State(app): State<App>, Extension(v): Extension<Visitor>) -> Response {
    let (categories, featured) = tokio::join!(
        app.api.categories(),
        app.api.products(None, None, None, FEATURED)
    );
    match (categories, featured) {
        (Ok(categories), Ok(featured)) => pages::render(
            StatusCode::OK,
            &Home {
                layout: layout(&v, "Welcome"),
                categories: categories
                    .iter()
                    .map(|c| (c.slug.clone(), c.name.clone()))
                    .collect(),
                featured: featured.items.iter().map(ProductView::from).collect(),
            },
        ),
        (Err(e), _) | (_, Err(e)) => failure(&v, e, "The product catalogue"),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    q: Option<String>,
    cursor: Option<String>,
}

pub(super) async fn search(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Query(params): Query<ListQuery>,
) -> Response {
    let q: String = params
        .q
        .unwrap_or_default()
        .trim()
        .chars()
        .take(100)
        .collect();
    let page = match app
        .api
        .products(Some(&q), None, params.cursor.as_deref(), PAGE_SIZE)
        .await
    {
        Ok(page) => page,
        Err(e) => return failure(&v, e, "The product catalogue"),
    };
    let mut layout = layout(&v, format!("Search: {q}"));
    layout.query = q.clone();
    let heading = if q.is_empty() {
        "All products".to_owned()
    } else {
        format!("Search results for “{q}”")
    };
    pages::render(
        StatusCode::OK,
        &Listing {
            layout,
            heading,
            products: page.items.iter().map(ProductView::from).collect(),
            next: page
                .next_cursor
                .map(|c| format!("/search?{}", query(&[("q", &q), ("cursor", &c)]))),
        },
    )
}

pub(super) async fn category(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Path(slug): Path<String>,
    Query(params): Query<ListQuery>,
) -> Response {
    if slug.is_empty()
        || slug.len() > 64
        || !slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return not_found_page(&v, "That category");
    }
    let (categories, page) = tokio::join!(
        app.api.categories(),
        app.api
            .products(None, Some(&slug), params.cursor.as_deref(), PAGE_SIZE)
    );
    let (categories, page) = match (categories, page) {
        (Ok(c), Ok(p)) => (c, p),
        (Err(e), _) | (_, Err(e)) => return failure(&v, e, "The product catalogue"),
    };
    let Some(found) = categories.iter().find(|c| c.slug == slug).cloned() else {
        return not_found_page(&v, "That category");
    };
    pages::render(
        StatusCode::OK,
        &Listing {
            layout: layout(&v, found.name.clone()),
            heading: found.name,
            products: page.items.iter().map(ProductView::from).collect(),
            next: page
                .next_cursor
                .map(|c| format!("/category/{slug}?{}", query(&[("cursor", &c)]))),
        },
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct ProductQuery {
    saved: Option<String>,
}

/// The product page, with `notice` and the typed `quantity` when a form on it was refused.
pub(super) async fn product_page(
    app: &App,
    v: &Visitor,
    id: &str,
    status: StatusCode,
    notice: Option<Notice>,
    quantity: Option<String>,
    admin: Option<AdminForm>,
) -> Response {
    let Some(id) = uuid(id) else {
        return not_found_page(v, "That product");
    };
    let (product, stock) = tokio::join!(app.api.product(&id), app.api.stock(&id));
    let product = match product {
        Ok(p) => p,
        Err(e) => return failure(v, e, "That product"),
    };
    let stock = match stock {
        Ok(s) if s.available <= 0 => StockLevel::SoldOut,
        Ok(s) if s.available <= FEW_LEFT => StockLevel::Few(s.available),
        Ok(_) => StockLevel::InStock,
        // Inventory down: the page still shows the product; checkout will say if it is gone.
        Err(_) => StockLevel::Unknown,
    };
    let admin = v.is_admin().then(|| {
        admin.unwrap_or_else(|| AdminForm {
            price: product.price.amount_text(false),
            on_hand: String::new(),
        })
    });
    pages::render(
        status,
        &ProductPage {
            layout: layout(v, product.name.clone()),
            product: ProductView::from(&product),
            stock,
            notice,
            quantity: quantity.unwrap_or_else(|| "1".to_owned()),
            admin,
        },
    )
}

pub(super) async fn product(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Path(id): Path<String>,
    Query(params): Query<ProductQuery>,
) -> Response {
    let notice = params.saved.map(|_| Notice::status("Saved."));
    product_page(&app, &v, &id, StatusCode::OK, notice, None, None).await
}

pub(super) async fn not_found(
    Extension(v): Extension<Visitor>,
    headers: HeaderMap,
    request_path: axum::http::Uri,
) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if request_path.path().starts_with("/api/") || !wants_html {
        return shop_kit::Problem::not_found("no such page").into_response();
    }
    not_found_page(&v, "That page")
}
