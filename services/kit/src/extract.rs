//! axum's extractors, with rejections turned into problem+json so every 4xx has one shape.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::problem::Problem;

/// A JSON request body or response.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(Problem::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body with Content-Type: application/json",
            ));
        }
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| Problem::new(r.status(), r.body_text()))?;
        // Every request body of the API is an object; serde would also read a struct from an
        // array of its fields in order, which no document promises.
        if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return Err(Problem::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "the request body must be a JSON object, not an array",
            ));
        }
        match axum::Json::<T>::from_bytes(&body) {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

/// `application/json` or `application/<something>+json`, parameters aside (as axum's check).
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype.len() > 5 && subtype[subtype.len() - 5..].eq_ignore_ascii_case("+json"))
}

fn json_problem(rejection: JsonRejection) -> Problem {
    let status = rejection.status();
    let detail = match rejection {
        JsonRejection::JsonSyntaxError(_) => {
            format!(
                "the request body is not valid JSON: {}",
                rejection.body_text()
            )
        }
        JsonRejection::JsonDataError(_) => {
            format!(
                "the request body has the wrong shape: {}",
                rejection.body_text()
            )
        }
        JsonRejection::MissingJsonContentType(_) => {
            "send the body with Content-Type: application/json".to_owned()
        }
        other => other.body_text(),
    };
    Problem::new(status, detail)
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Query-string parameters.
#[derive(Debug, Clone, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|r: QueryRejection| Problem::bad_request(r.body_text()))
    }
}

/// Path parameters; a malformed id is a 404 for the resource, not a server error.
#[derive(Debug, Clone)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|r: PathRejection| {
                Problem::not_found(format!("no such resource: {}", r.body_text()))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: Option<String>,
    }

    async fn read(content_type: &str, body: &str) -> Result<Json<Body>, Problem> {
        let request = axum::http::Request::builder()
            .header("content-type", content_type)
            .body(axum::body::Body::from(body.to_owned()))
            .unwrap();
        Json::<Body>::from_request(request, &()).await
    }

    #[tokio::test]
    async fn a_body_is_a_json_object_sent_as_json() {
        assert!(
            read("application/json; charset=utf-8", r#"{"name": "a"}"#)
                .await
                .is_ok()
        );
        assert!(read("application/merge-patch+json", "{}").await.is_ok());
        assert_eq!(read("text/plain", "{}").await.unwrap_err().status, 415);
        assert_eq!(
            read("application/json", " [null]")
                .await
                .unwrap_err()
                .status,
            422
        );
        assert_eq!(read("application/json", "{").await.unwrap_err().status, 400);
        assert_eq!(
            read("application/json", r#"{"name": 1}"#)
                .await
                .unwrap_err()
                .status,
            422
        );
    }
}
