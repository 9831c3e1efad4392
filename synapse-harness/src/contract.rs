//! The homeserver contract suite.
