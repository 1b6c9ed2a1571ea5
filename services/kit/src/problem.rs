//! RFC 9457 problem details: the one error type every handler returns.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shop_contracts::rules::Checks;
/// A field's broken rule: the contracts' type, so a rule written there reports in this shape.
pub use shop_contracts::rules::FieldError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error that becomes an `application/problem+json` response.
///
/// `detail` is shown to the caller, so it must never carry secrets or internals; the cause of an
/// internal error is logged instead (see [`Problem::internal`]).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the problem type; `about:blank` when the status says it all.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Field-level validation errors, when the request body was the problem.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Set when the cause may be a database server that is down (unreachable, or no connection
    /// for the whole acquire timeout): the response carries [`crate::db::DatabaseMayBeDown`],
    /// which starts the service's check of the server.
    #[serde(skip)]
    #[schema(ignore)]
    pub(crate) database_may_be_down: bool,
}

/// Seconds a `503` problem asks the client to wait before trying again (`Retry-After`); a
/// handler that wants another value sets the header on the response it built from the problem.
pub const RETRY_AFTER_SECS: u32 = 2;

pub type ApiResult<T> = Result<T, Problem>;

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: Some(detail.into()),
            errors: Vec::new(),
            database_may_be_down: false,
        }
    }

    /// A problem with a named type, for errors a client may want to branch on.
    pub fn typed(status: StatusCode, kind: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("https://shop.dev/problems/{kind}"),
            ..Self::new(status, detail)
        }
    }

    /// This problem with field-level errors.
    pub fn with_errors(self, errors: Vec<FieldError>) -> Self {
        Self { errors, ..self }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            errors,
            ..Self::typed(StatusCode::UNPROCESSABLE_ENTITY, "validation", detail)
        }
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, detail)
    }

    pub fn too_many_requests(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
    }

    /// The service's database server is down (or was a moment ago): try again shortly.
    pub fn database_down() -> Self {
        Self {
            database_may_be_down: true,
            ..Self::typed(
                StatusCode::SERVICE_UNAVAILABLE,
                "database-unavailable",
                "the database is unavailable; try again shortly",
            )
        }
    }

    /// An unexpected failure: the cause goes to the log, the caller gets a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "an unexpected error occurred",
        )
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.title)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let may_be_down = self.database_may_be_down;
        let mut response = (status, axum::Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if may_be_down {
            response
                .extensions_mut()
                .insert(crate::db::DatabaseMayBeDown);
        }
        response
    }
}

impl From<sqlx::Error> for Problem {
    fn from(err: sqlx::Error) -> Self {
        use crate::db::Failure;
        match Failure::of(&err) {
            Some(Failure::Busy) => Self {
                database_may_be_down: true,
                ..Self::unavailable("the database is busy; try again")
            },
            Some(Failure::Unreachable) => {
                tracing::warn!(error = %err, "the database is unreachable");
                Self::database_down()
            }
            Some(Failure::CannotWrite) => {
                tracing::error!(error = %err, "the database cannot write");
                Self::typed(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database-cannot-write",
                    "the database cannot store this now (out of space or read-only); try again \
                     later",
                )
            }
            None => Self::internal(err),
        }
    }
}

/// Collects field errors while validating a request, then turns them into one 422. It derefs to
/// the contracts' [`Checks`], so a contract's rule (`check_card(&mut v, …)`) records into it.
#[derive(Debug, Default)]
pub struct Validator {
    checks: Checks,
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn check(&mut self, ok: bool, field: &str, message: impl Into<String>) -> &mut Self {
        self.checks.check(ok, field, message);
        self
    }

    /// A required text field: trimmed length within `1..=max` characters.
    pub fn text(&mut self, field: &str, value: &str, max: usize) -> &mut Self {
        self.checks.text(field, value, max);
        self
    }

    pub fn finish(&mut self) -> ApiResult<()> {
        if self.checks.is_empty() {
            Ok(())
        } else {
            Err(Problem::validation(self.checks.take()))
        }
    }
}

impl std::ops::Deref for Validator {
    type Target = Checks;
    fn deref(&self) -> &Checks {
        &self.checks
    }
}

impl std::ops::DerefMut for Validator {
    fn deref_mut(&mut self) -> &mut Checks {
        &mut self.checks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validator_collects_every_failure() {
        let err = Validator::new()
            .text("name", "", 10)
            .text("email", &"x".repeat(11), 10)
            .check(true, "ok", "never")
            .finish()
            .unwrap_err();
        assert_eq!(err.status, 422);
        assert_eq!(err.errors.len(), 2);
        assert_eq!(err.errors[0].field, "name");
        assert!(
            err.detail
                .unwrap()
                .contains("email: must be at most 10 characters")
        );
    }

    #[test]
    fn problem_response_has_problem_content_type() {
        let response = Problem::not_found("no such product").into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert!(!response.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn every_503_says_when_to_try_again() {
        for problem in [
            Problem::unavailable("busy"),
            Problem::database_down(),
            Problem::from(sqlx::Error::PoolTimedOut),
        ] {
            let response = problem.into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        }
    }

    #[test]
    fn database_failures_are_503s_and_the_unreachable_ones_start_a_check() {
        let refused = sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into());
        let problem = Problem::from(refused);
        assert_eq!(problem.status, 503);
        assert!(problem.kind.ends_with("/database-unavailable"));
        let response = problem.into_response();
        assert!(
            response
                .extensions()
                .get::<crate::db::DatabaseMayBeDown>()
                .is_some()
        );
        // A busy pool starts the check too (the check tells busy from down); a bug does not.
        let busy = Problem::from(sqlx::Error::PoolTimedOut).into_response();
        assert!(
            busy.extensions()
                .get::<crate::db::DatabaseMayBeDown>()
                .is_some()
        );
        let bug = Problem::from(sqlx::Error::RowNotFound);
        assert_eq!(bug.status, 500);
        assert!(
            bug.into_response()
                .extensions()
                .get::<crate::db::DatabaseMayBeDown>()
                .is_none()
        );
    }
}
