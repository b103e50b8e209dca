//! The domain: pure, synchronous, no I/O, no clock, no randomness. Every rule
//! of the credit policy (R1-R8) is decided here, on values handed in.
//!
//! - [`credits`], [`money`], [`period`], [`account`], [`text`]: validated values.
//! - [`lot`]: blocks of credits and the spending order (R6).
//! - [`state`]: one account's loaded state and the passage of time (R2, R3).
//! - [`command`]: every mutation as data, and [`command::apply`].
//! - [`spend`], [`purchase`], [`grant`], [`statement`]: the transitions;
//!   [`recharge`]: the purchases auto-recharge makes during a spend.
//! - [`entry`], [`hold`], [`debit`]: the records transitions write.
//! - [`event`]: the outbox's events and the alerts' memory.
//! - [`view`]: the JSON shapes the outside world sees.

pub mod account;
pub mod command;
pub mod credits;
pub mod debit;
pub mod entry;
mod error;
pub mod event;
pub mod grant;
pub mod hold;
pub mod lot;
pub mod money;
pub mod period;
pub mod purchase;
pub mod recharge;
pub mod spend;
pub mod state;
pub mod statement;
pub mod text;
pub mod usage;
pub mod view;

pub use error::DomainError;
