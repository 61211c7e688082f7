//! Embedded default
