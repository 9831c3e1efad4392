//! The storage contract: every repository method, exercised on SQLite and on PostgreSQL
//! (see `provider::test_harness` for how the PostgreSQL database is found).

mod users;
