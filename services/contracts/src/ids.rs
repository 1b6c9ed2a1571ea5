//! Typed ids at the API edge: an order id cannot be passed where a product id is meant. On the
//! wire each is the plain UUID string it always was.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
            ToSchema,
        )]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The id in a text column or a path (`Uuid`'s hyphenated form). Not a UUID: the
            /// nil id, which every rule refuses.
            pub fn parse_or_nil(text: &str) -> Self {
                Self(Uuid::parse_str(text).unwrap_or_default())
            }
        }

        impl std::ops::Deref for $name {
            type Target = Uuid;
            fn deref(&self) -> &Uuid {
                &self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// An order (the order service's id; also keys its reservation, charge and shipment).
    OrderId
);
uuid_id!(
    /// A catalog product.
    ProductId
);
uuid_id!(
    /// A customer account.
    UserId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_uuid_strings_on_the_wire() {
        let id = OrderId(Uuid::from_u128(7));
        let text = serde_json::to_string(&id).unwrap();
        assert_eq!(text, format!("\"{}\"", id.0));
        assert_eq!(serde_json::from_str::<OrderId>(&text).unwrap(), id);
        assert!(ProductId::parse_or_nil("not a uuid").is_nil());
        assert_eq!(UserId::parse_or_nil(&id.to_string()).0, id.0);
    }
}
