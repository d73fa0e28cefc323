//! Shared helpers for the microlm end-to-end tests.
