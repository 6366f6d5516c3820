//! Integration tests of Converge.
