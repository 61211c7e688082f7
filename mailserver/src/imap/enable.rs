//! ENABLE (RFC 5161): the extensions a client turned on, kept in the session so the commands
//! they change (CONDSTORE, QRESYNC) can ask [`Enabled::has`].

use imap_codec::imap_types::core::{Tag, Vec1};
use imap_codec::imap_types::extensions::enable::CapabilityEnable;
use imap_codec::imap_types::response::Data;

use super::reply::{self, CommandError};
use super::session::{Outcome, Session};

/// Extensions enabled in this session, by their capability name in upper case. Small: a
/// session enables one or two, once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Enabled(Vec<String>);

impl Enabled {
    /// Whether the client enabled `name` (`CONDSTORE`, `QRESYNC`, ...; any case).
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    fn insert(&mut self, name: String) -> bool {
        if self.has(&name) {
            false
        } else {
            self.0.push(name);
            true
        }
    }
}

impl Session {
    /// Enables what the server announces among what the client asks; the rest is ignored,
    /// as RFC 5161 wants. `* ENABLED` lists only what this command newly enabled.
    pub(super) fn enable(
        &mut self,
        tag: Tag<'static>,
        asked: Vec1<CapabilityEnable<'static>>,
    ) -> Outcome {
        // RFC 5161 §3.1: before a folder is selected, so no selected state changes meaning.
        if self.selected.is_some() {
            return Err(CommandError::bad("ENABLE is only valid before SELECT"));
        }
        let offered: Vec<String> = self
            .capabilities()
            .as_ref()
            .iter()
            .map(|c| c.to_string().to_ascii_uppercase())
            .collect();
        let mut newly = Vec::new();
        for capability in asked.into_inner() {
            let name = capability.to_string().to_ascii_uppercase();
            if !offered.contains(&name) {
                continue;
            }
            // QRESYNC implies CONDSTORE (RFC 7162 §3.2.3).
            if name == "QRESYNC" {
                self.enabled.insert("CONDSTORE".to_string());
            }
            if self.enabled.insert(name) {
                newly.push(capability);
            }
        }
        self.push(Data::Enabled {
            capabilities: newly,
        });
        Ok(reply::tagged_ok(tag, None, "ENABLE completed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enabled_set() {
        let mut enabled = Enabled::default();
        assert!(!enabled.has("CONDSTORE"));
        assert!(enabled.insert("CONDSTORE".into()));
        assert!(!enabled.insert("CONDSTORE".into()));
        assert!(enabled.has("condstore"));
        assert!(!enabled.has("QRESYNC"));
    }
}
