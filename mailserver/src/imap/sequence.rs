//! Sequence sets (`1:4,7,9:*`) against the selected folder: which messages they name.
//!
//! A set is normalised once per command into sorted, disjoint ranges, so membership is a binary
//! search and `1:4294967295` costs no more than `1:*`. A set may carry at most
//! [`MAX_SEQUENCES`] numbers and ranges: past that the command is refused before any work.

use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use super::reply::CommandError;

/// Most numbers and ranges one sequence set may hold (`FETCH 1,1,1,...`).
pub const MAX_SEQUENCES: usize = 50_000;

fn resolve(value: &SeqOrUid, star: u32) -> u32 {
    match value {
        SeqOrUid::Value(n) => n.get(),
        SeqOrUid::Asterisk => star,
    }
}

/// A sequence set with `*` resolved: sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ranges(Vec<(u32, u32)>);

impl Ranges {
    /// Normalises `set`, `*` standing for `star`. Ranges may be written backwards.
    pub fn new(set: &SequenceSet, star: u32) -> Result<Self, CommandError> {
        let sequences = set.0.as_ref();
        if sequences.len() > MAX_SEQUENCES {
            return Err(CommandError::bad(format!(
                "Sequence set too long: at most {MAX_SEQUENCES} numbers and ranges"
            )));
        }
        let mut ranges: Vec<(u32, u32)> = sequences
            .iter()
            .map(|sequence| match sequence {
                Sequence::Single(x) => (resolve(x, star), resolve(x, star)),
                Sequence::Range(a, b) => {
                    let (a, b) = (resolve(a, star), resolve(b, star));
                    (a.min(b), a.max(b))
                }
            })
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        Ok(Self(merged))
    }

    pub fn contains(&self, value: u32) -> bool {
        // The last range starting at or before `value` is the only one that can hold it.
        let after = self.0.partition_point(|&(start, _)| start <= value);
        after > 0 && value <= self.0[after - 1].1
    }

    fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.0.iter().copied()
    }
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
/// UIDs in sequence order (ascending). With `uid`, the set holds UIDs and `*` is the largest
/// UID present; otherwise it holds sequence numbers, and one past the end is a client error
/// (`BAD`). Costs the number of ranges times log of the folder, plus the answer.
pub fn select(uids: &[u32], set: &SequenceSet, uid: bool) -> Result<Vec<usize>, CommandError> {
    let mut positions = Vec::new();
    if uid {
        let star = uids.last().copied().unwrap_or(0);
        for (start, end) in Ranges::new(set, star)?.iter() {
            let from = uids.partition_point(|&u| u < start);
            let to = uids.partition_point(|&u| u <= end);
            positions.extend(from..to);
        }
    } else {
        let count = u32::try_from(uids.len()).unwrap_or(u32::MAX);
        if largest_explicit(set) > count {
            return Err(CommandError::bad("Message sequence number out of range"));
        }
        for (start, end) in Ranges::new(set, count)?.iter() {
            let (from, to) = (start.max(1) as usize - 1, end.min(count) as usize);
            positions.extend(from..to.max(from));
        }
    }
    Ok(positions)
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
        assert_eq!(select(&[], &set("*"), false).unwrap(), Vec::<usize>::new());
        assert_eq!(select(&[], &set("*"), true).unwrap(), Vec::<usize>::new());
    }

    #[test]
    fn normalises() {
        for (input, star, want) in [
            ("1,1,1", 9, vec![(1, 1)]),
            ("3,1,2", 9, vec![(1, 3)]),
            ("5:3,1", 9, vec![(1, 1), (3, 5)]),
            ("1:4,2:8,10", 9, vec![(1, 8), (10, 10)]),
            ("*,1", 9, vec![(1, 1), (9, 9)]),
            ("*:4", 9, vec![(4, 9)]),
            ("4294967295,1:4294967294", 9, vec![(1, 4294967295)]),
            ("7:*", 3, vec![(3, 7)]),
        ] {
            assert_eq!(Ranges::new(&set(input), star).unwrap().0, want, "{input}");
        }
        let ranges = Ranges::new(&set("2:4,8,10:12"), 0).unwrap();
        let members: Vec<u32> = (0..15).filter(|&v| ranges.contains(v)).collect();
        assert_eq!(members, [2, 3, 4, 8, 10, 11, 12]);
    }

    #[test]
    fn long_sets() {
        let ones = vec!["1"; MAX_SEQUENCES].join(",");
        assert_eq!(select(&[7], &set(&ones), false).unwrap(), vec![0]);
        let too_many = vec!["1"; MAX_SEQUENCES + 1].join(",");
        assert!(select(&[7], &set(&too_many), false).is_err());
        // A million messages named by one range: the answer, nothing more.
        let uids: Vec<u32> = (1..=1_000_000).collect();
        assert_eq!(
            select(&uids, &set("1:4294967295"), true).unwrap().len(),
            1_000_000
        );
        assert_eq!(
            select(&uids, &set("999999:*"), false).unwrap(),
            vec![999_998, 999_999]
        );
    }
}
