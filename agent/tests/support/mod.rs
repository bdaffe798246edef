//! Helpers for tests that need real kernel networking.
#![allow(dead_code)]

pub mod netns;
pub mod pkt;
