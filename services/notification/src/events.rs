//! The events this service consumes, each turned into one recorded message.
//!
//! Consumed: `user.registered` (also fills the address book), `order.placed`, `order.confirmed`,
//! `order.failed`, `shipment.created`, and `stock.low` (a message for the administrators).
//! Other types are ignored. Data that does not parse, or of an unknown `version`, is rejected
//! (dead-lettered by the runner). The message is only recorded here, in the consumer's
//! transaction; the dispatcher task ([`crate::sender::send_due`]) sends it after the commit.

use async_trait::async_trait;
use shop_events::Event;
use shop_events::consume::{HandleError, Handler};
use shop_kit::db::Tx;

use crate::domain::{Audience, Notice, Recipient};
use crate::storage::InTx;

/// The consumer name under which events are recorded in `processed_events`.
pub const CONSUMER: &str = "notification";

/// Records the message for each event it handles.
#[derive(Debug, Clone, Default)]
pub struct NotificationHandler {
    /// Where messages for the administrators go (`SHOP_ADMIN_EMAILS`); none: recorded only.
    admin_address: Option<String>,
}

impl NotificationHandler {
    pub fn new(admin_emails: &[String]) -> Self {
        Self {
            admin_address: (!admin_emails.is_empty()).then(|| admin_emails.join(", ")),
        }
    }
}

#[async_trait]
impl Handler for NotificationHandler {
    async fn handle(&self, tx: &mut Tx, event: &Event) -> Result<(), HandleError> {
        let notice = match Notice::parse(event) {
            Ok(Some(notice)) => notice,
            Ok(None) => return Ok(()),
            Err(unusable) => return Err(HandleError::Reject(unusable.into())),
        };
        let recipient = match &notice {
            Notice::UserRegistered(user) => {
                let recipient = Recipient {
                    email: user.email.trim().to_owned(),
                    name: user.name.trim().to_owned(),
                };
                InTx::remember(tx, user.user_id, &recipient).await?;
                Some(recipient)
            }
            other => match other.user_id() {
                Some(user_id) => InTx::recipient(tx, user_id).await?,
                None => None,
            },
        };
        let message = notice.render(recipient.as_ref());
        let address = match message.audience {
            Audience::User(_) => recipient.map(|r| r.email),
            Audience::Admins => self.admin_address.clone(),
        };
        InTx::record(tx, event.id, &event.kind, &message, address.as_deref()).await?;
        Ok(())
    }
}
