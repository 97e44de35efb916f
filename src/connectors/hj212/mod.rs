//! `leadbridge connect hj212`: the HJ 212-2017 listener (connector contract §4). Monitoring
//! stations connect over TCP and send their real-time, minute, hourly and daily data; the
//! listener keeps every packet as evidence, judges hourly averages against each station's
//! limits and watches for signs of tampering, and pushes the clues it finds to the hub.
//!
//! Promise: a packet is answered only once it is durably stored; a packet stored once is never
//! stored again (same MN, CN, DataTime); no bad frame, bad packet or unknown station stops the
//! stream; every lead revision made is pushed to the hub until the hub has answered it, across
//! restarts and hub outages; and a station, pollutant and day give at most one lead of each
//! kind, later evidence adding revisions.
//!
//! The parts: [`config`] (HJ212.toml), [`framing`] (bytes to frames), [`clues`] (hourly data
//! to leads, pure), [`store`] (the listener's database and outbox), [`server`] (connections,
//! the writer and the pusher).

pub mod clues;
pub mod config;
pub mod framing;
pub mod server;
pub mod store;
