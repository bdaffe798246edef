//! Helpers for tests that need real kernel networking.
#![allow(dead_code)]

pub mod e2e;
pub mod netns;
pub mod pkt;
