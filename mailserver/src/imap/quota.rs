//! QUOTA (RFC 9208): one quota root per account, `""`, holding every folder; the STORAGE
//! resource in units of 1024 octets. Limits are set by the operator, so SETQUOTA is refused.

use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::core::{AString, Tag, Vec1};
use imap_codec::imap_types::extensions::quota::{QuotaGet, Resource};
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::Data;

use super::mailbox::mailbox_name;
use super::reply::{self, CommandError};
use super::session::{Outcome, Session};
use crate::store::Usage;

/// The account's one quota root.
pub const QUOTA_ROOT: &str = "";

fn root() -> AString<'static> {
    AString::try_from(QUOTA_ROOT).expect("an empty string is a valid astring")
}

/// The `* QUOTA` line of a usage: STORAGE in KiB, usage rounded up.
pub fn quota_data(usage: &Usage) -> Data<'static> {
    let kib = |bytes: i64| u64::try_from(bytes.max(0)).unwrap_or(0);
    Data::Quota {
        root: root(),
        quotas: Vec1::from(QuotaGet::new(
            Resource::Storage,
            kib(usage.used_bytes).div_ceil(1024),
            kib(usage.quota_bytes) / 1024,
        )),
    }
}

impl Session {
    async fn account_usage(&self) -> Result<Usage, CommandError> {
        let mailbox_id = self.account()?.mailbox_id;
        self.ctx
            .store
            .usage(mailbox_id)
            .await?
            .ok_or_else(|| CommandError::no(Some("NONEXISTENT"), "No such quota root"))
    }

    /// GETQUOTAROOT works on any folder of the account, selected or not.
    pub(super) async fn get_quota_root(
        &mut self,
        tag: Tag<'static>,
        mailbox: &Mailbox<'_>,
    ) -> Outcome {
        let mailbox_id = self.account()?.mailbox_id;
        let name = mailbox_name(mailbox)?;
        if self.ctx.store.folder(mailbox_id, &name).await?.is_none() {
            return Err(CommandError::no(Some("NONEXISTENT"), "No such folder"));
        }
        let usage = self.account_usage().await?;
        self.push(Data::QuotaRoot {
            mailbox: mailbox.clone().into_static(),
            roots: vec![root()],
        });
        self.push(quota_data(&usage));
        Ok(reply::tagged_ok(tag, None, "GETQUOTAROOT completed"))
    }

    pub(super) async fn get_quota(&mut self, tag: Tag<'static>, name: &AString<'_>) -> Outcome {
        if AsRef::<[u8]>::as_ref(name) != QUOTA_ROOT.as_bytes() {
            return Err(CommandError::no(Some("NONEXISTENT"), "No such quota root"));
        }
        let usage = self.account_usage().await?;
        self.push(quota_data(&usage));
        Ok(reply::tagged_ok(tag, None, "GETQUOTA completed"))
    }
}
