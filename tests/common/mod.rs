//! Shared harness for the integration tests: each test file includes it with
//! `mod common;` and uses the parts it needs.

#![allow(dead_code)]

pub mod driver;
