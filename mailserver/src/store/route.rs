//! Where an address leads: a local mailbox (perhaps into a `+tag` folder), an address of ours
//! that forwards elsewhere, an unknown user of a hosted domain, or a domain not hosted here.
//!
//! The protocols ask [`Store::route`] and never read the domain tables themselves.

use super::recipients::normalize_address;
use super::{Recipient, Store, StoreError};
use crate::pipeline::srs;

/// What an address resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// A mailbox here. `folder` on the recipient is the `+tag`, when one was given.
    Local(Recipient),
    /// The domain is hosted here but the address delivers nowhere.
    UnknownUser,
    /// The domain is not hosted here: a remote address (relaying needs authentication).
    NotHosted,
    /// An address of ours that forwards to these addresses elsewhere (a forwarding alias, or
    /// an SRS address a bounce comes back to).
    Remote(Vec<String>),
}

/// How local parts are read; see `--plus-separator`, `--postmaster` and `--srs-secret`.
#[derive(Clone, Debug)]
pub struct Addressing {
    /// `user<sep>tag@` delivers to `user@` (into folder `tag` when it exists); `None` turns
    /// sub-addressing off.
    pub separator: Option<char>,
    /// Where the bare `postmaster` (RFC 5321 section 4.5.1) delivers; the primary (oldest)
    /// domain's `postmaster@` when `None`.
    pub postmaster: Option<String>,
    /// The key of the SRS hashes; reversing SRS addresses is off without one.
    pub srs_secret: Option<Vec<u8>>,
}

impl Default for Addressing {
    fn default() -> Self {
        Self {
            separator: Some('+'),
            postmaster: None,
            srs_secret: None,
        }
    }
}

impl Store {
    /// Where mail for `address` goes. Local parts are case-insensitive (stored lower case).
    pub async fn route(&self, address: &str) -> Result<Route, StoreError> {
        let address = normalize_address(address);
        if address == "postmaster" {
            return match self.postmaster().await? {
                Some(target) => Box::pin(self.route(&target)).await,
                None => Ok(Route::UnknownUser),
            };
        }
        let Some((local, domain)) = address.rsplit_once('@') else {
            return Ok(Route::UnknownUser);
        };
        let hosted: Option<Option<String>> = sqlx::query_scalar(
            "SELECT catch_all FROM domains WHERE name = $1 AND deleted_at IS NULL",
        )
        .bind(domain)
        .fetch_optional(&self.db)
        .await?;
        let Some(catch_all) = hosted else {
            return Ok(Route::NotHosted);
        };
        if let Some(found) = self.lookup_exact(&address).await? {
            return Ok(Route::Local(found));
        }
        let forwards: Vec<String> =
            sqlx::query_scalar("SELECT target FROM alias_forwards WHERE address = $1 ORDER BY id")
                .bind(&address)
                .fetch_all(&self.db)
                .await?;
        if !forwards.is_empty() {
            return Ok(Route::Remote(forwards));
        }
        if let Some(secret) = &self.addressing.srs_secret
            && let Some(original) = srs::reverse(secret, local, chrono::Utc::now())
        {
            return Ok(Route::Remote(vec![original]));
        }
        if let Some(sep) = self.addressing.separator
            && let Some((base, tag)) = local.split_once(sep)
            && let Some(mut found) = self.lookup_exact(&format!("{base}@{domain}")).await?
        {
            found.folder = (!tag.is_empty()).then(|| tag.to_string());
            return Ok(Route::Local(found));
        }
        match catch_all {
            Some(target) => Ok(self
                .lookup_exact(&normalize_address(&target))
                .await?
                .map_or(Route::UnknownUser, Route::Local)),
            None => Ok(Route::UnknownUser),
        }
    }

    /// The address the bare `postmaster` stands for.
    async fn postmaster(&self) -> Result<Option<String>, StoreError> {
        if let Some(configured) = &self.addressing.postmaster {
            return Ok(Some(configured.clone()));
        }
        let primary: Option<String> = sqlx::query_scalar(
            "SELECT name FROM domains WHERE deleted_at IS NULL ORDER BY id LIMIT 1",
        )
        .fetch_optional(&self.db)
        .await?;
        Ok(primary.map(|domain| format!("postmaster@{domain}")))
    }
}
