//! Sequence sets (`1:4,7,9:*`) against the selected folder: which messages they name.
//!
//! Sets are checked by membership, never expanded, so `1:4294967295` costs no more than `1:*`.

use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use super::reply::CommandError;

fn resolve(value: &SeqOrUid, star: u32) -> u32 {
    match value {
        SeqOrUid::Value(n) => n.get(),
        SeqOrUid::Asterisk => star,
    }
}

/// Whether `value` is in `set`, `*` standing for `star`. Ranges may be written backwards.
pub fn contains(set: &SequenceSet, value: u32, star: u32) -> bool {
    set.0.as_ref().iter().any(|sequence| match sequence {
        Sequence::Single(x) => resolve(x, star) == value,
        Sequence::Range(a, b) => {
            let (a, b) = (resolve(a, star), resolve(b, star));
            a.min(b) <= value && value <= a.max(b)
        }
    })
}

/// The largest number written in the set, `*` aside.
fn largest_explicit(set: &SequenceSet) -> u32 {
    set.0
        .as_ref()
        .iter()
        .flat_map(|sequence| match sequence {
            Sequence::Single(x) => [Some(x), None],
            Sequence::Range(a, b) => [Some(a), Some(b)],
        })
        .flatten()
        .map(|x| resolve(x, 0))
        .max()
        .unwrap_or(0)
}

/// Positions (0-based, ascending) of the messages the set names. `uids` are the folder's
/// UIDs in sequence order. With `uid`, the set holds UIDs and `*` is the largest UID present;
/// otherwise it holds sequence numbers, and one past the end is a client error (`BAD`).
pub fn select(uids: &[u32], set: &SequenceSet, uid: bool) -> Result<Vec<usize>, CommandError> {
    if uid {
        let star = uids.last().copied().unwrap_or(0);
        Ok(uids
            .iter()
            .enumerate()
            .filter(|(_, u)| contains(set, **u, star))
            .map(|(i, _)| i)
            .collect())
    } else {
        let count = u32::try_from(uids.len()).unwrap_or(u32::MAX);
        if largest_explicit(set) > count {
            return Err(CommandError::bad("Message sequence number out of range"));
        }
        Ok((1..=count)
            .filter(|seq| contains(set, *seq, count))
            .map(|seq| seq as usize - 1)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> SequenceSet {
        SequenceSet::try_from(s).unwrap()
    }

    #[test]
    fn selects() {
        let uids = [3, 5, 9, 10];
        for (input, uid, want) in [
            ("1:*", false, Ok(vec![0, 1, 2, 3])),
            ("*", false, Ok(vec![3])),
            ("2,4", false, Ok(vec![1, 3])),
            ("4:2", false, Ok(vec![1, 2, 3])),
            ("5", false, Err(())),
            ("1:5", false, Err(())),
            ("1:*", true, Ok(vec![0, 1, 2, 3])),
            ("5", true, Ok(vec![1])),
            ("4", true, Ok(vec![])),
            ("6:9", true, Ok(vec![2])),
            // `n:*` always includes the last message, even when n is beyond it (RFC 3501 §6.4.8).
            ("11:*", true, Ok(vec![3])),
            ("1:4294967295", true, Ok(vec![0, 1, 2, 3])),
            ("*", true, Ok(vec![3])),
        ] {
            let got = select(&uids, &set(input), uid).map_err(|_| ());
            assert_eq!(got, want, "{input} uid={uid}");
        }
        assert_eq!(select(&[], &set("1:*"), true).unwrap(), Vec::<usize>::new());
        assert!(select(&[], &set("1:*"), false).is_err());
    }
}
