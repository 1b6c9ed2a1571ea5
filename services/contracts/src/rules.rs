//! Field errors as plain data: a contract's rule reports what is wrong with which field, and each
//! side turns the list into its own answer (the kit's 422 problem, or a field name of its own API).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One broken rule of a request field (in a 422 problem's `errors`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Collects the field errors of one request, in the order the rules ran.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Checks {
    errors: Vec<FieldError>,
}

impl Checks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `message` against `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, message: impl Into<String>) -> &mut Self {
        if !ok {
            self.errors.push(FieldError {
                field: field.into(),
                message: message.into(),
            });
        }
        self
    }

    /// A required text field: trimmed length within `1..=max` characters.
    pub fn text(&mut self, field: &str, value: &str, max: usize) -> &mut Self {
        let len = value.trim().chars().count();
        self.check(len > 0, field, "must not be empty").check(
            len <= max,
            field,
            format!("must be at most {max} characters"),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The errors so far, leaving none behind.
    pub fn take(&mut self) -> Vec<FieldError> {
        std::mem::take(&mut self.errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_collect_every_failure_in_order() {
        let mut checks = Checks::new();
        checks
            .text("name", "  ", 10)
            .text("email", &"x".repeat(11), 10)
            .check(true, "ok", "never");
        let fields: Vec<_> = checks.take().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["name", "email"]);
        assert!(checks.is_empty());
    }
}
