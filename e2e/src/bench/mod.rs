//! Shared parts of the benchmark programs in `src/bin/`: the real `mailserver` binary as a child
//! process whose memory can be read, a domain of benchmark users, small wire clients and figures.

pub mod process;
pub mod stats;
pub mod users;
pub mod wire;
