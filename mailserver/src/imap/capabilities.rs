//! Capabilities announced once the client has logged in (RFC 3501 §7.2.1 lets the list
//! change with the state). The commands behind them live in `folders`, `quota`, `enable` and
//! `mailbox`.

use imap_codec::imap_types::core::Atom;
use imap_codec::imap_types::extensions::quota::Resource;
use imap_codec::imap_types::extensions::thread::ThreadingAlgorithm;
use imap_codec::imap_types::response::Capability;

/// A capability imap-types has no variant for; the names here are constant atoms.
fn other(name: &'static str) -> Capability<'static> {
    Capability::from(Atom::try_from(name).expect("capability names are atoms"))
}

/// What a logged-in client is told beyond the pre-login list.
pub fn after_login() -> Vec<Capability<'static>> {
    vec![
        Capability::Enable,
        // RFC 3348: every LIST line says \HasChildren or \HasNoChildren.
        other("CHILDREN"),
        // RFC 6154: Sent, Drafts, Trash, Junk and Archive carry their attribute in LIST.
        other("SPECIAL-USE"),
        // RFC 6154 §3: `CREATE name (USE (\Archive))`, read by `extended`.
        other("CREATE-SPECIAL-USE"),
        Capability::Quota,
        Capability::QuotaRes(Resource::Storage),
        Capability::StatusSize,
        // RFC 5256, from the cached header summaries.
        Capability::Sort(None),
        Capability::Thread(ThreadingAlgorithm::OrderedSubject),
        // RFC 3516: FETCH BINARY of decoded parts (APPEND takes literal8 already).
        Capability::Binary,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_on_the_wire() {
        let names: Vec<String> = after_login().iter().map(|c| c.to_string()).collect();
        assert_eq!(
            names,
            [
                "ENABLE",
                "CHILDREN",
                "SPECIAL-USE",
                "CREATE-SPECIAL-USE",
                "QUOTA",
                "QUOTA=RES-STORAGE",
                "STATUS=SIZE",
                "SORT",
                "THREAD=ORDEREDSUBJECT",
                "BINARY"
            ]
        );
    }
}
