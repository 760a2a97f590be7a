//! messnetz: a gateway for a city's weather and climate sensor network.
//!
//! Data flows top to bottom, and so do the modules:
//!
//! - [`config`] turns the TOML file and `MESSNETZ__` variables into typed [`config::Settings`],
//!   including the `[quality]` thresholds ([`config::QualitySettings`]) and the MQTT
//!   topic-filter rules ([`config::topic`]).
//! - [`sources`] holds the inputs, the broker connection ([`sources::mqtt`]) and the embedded
//!   listener of the zero-setup default ([`sources::listener`], which acknowledges publishers
//!   only after storage), and one parser per message format (The Things Stack v3, ChirpStack v4, raw LoRaWAN frames), each producing an
//!   [`sources::Uplink`]; raw frames are authenticated and decrypted with ABP session keys
//!   ([`sources::lorawan`], which also defines the frame-counter state that the store keeps).
//! - [`devices`] finds the device an uplink came from; [`profiles`] decodes its payload into
//!   values of canonical [`model::Quantity`]s; [`quality`] flags each value.
//! - [`ingest`] is the stage that ties these together and writes batches to the [`store`],
//!   acknowledging messages to the broker only after their batch is durable.
//! - With `[influxdb]`, [`store::influx`] sends the readings on to InfluxDB v2 from a durable
//!   spool ([`store::outbox`]) that ingest fills in the same commit as the embedded store.
//! - [`aggregates`] defines the rollup windows and the derived quantities (dew point, heat
//!   index). The store keeps district windows in the readings' own transaction and journals
//!   device windows there; [`rollup_flush`] stores the journaled ones every few seconds.
//! - [`retention`] deletes readings, rollups and dead letters past their configured age, in
//!   small chunks beside ingest.
//! - [`api`] serves the stored data over HTTP; [`metrics`] counts what happened.
//! - [`registry`] holds the devices and profiles in use and reloads them when their files change.
//! - [`replay`] finds dead letters and runs them through the ingest path again: one service
//!   for the operator API and `messnetz dead-letters`.
//! - [`api::admin`] is the operator API (tokens scoped to departments: devices, profiles,
//!   dead-letter replays, reload); [`audit`] records every change it makes.
//! - [`app`] wires the stages and owns shutdown.
//! - [`cli`] is the command line, a module per command group; `main.rs` only parses the
//!   arguments, starts the gateway's tracing and hands the command over.
//!
//! Imports only point down, and no two modules import each other. From the ground up:
//! [`model`] (and [`audit`]); [`config`] and [`aggregates`]; [`sources`], [`devices`],
//! [`profiles`] and [`quality`], which use only model and config types (the store implements
//! quality's [`quality::SeriesLookup`], and [`metrics`] holds the counters of quality and the
//! inputs); [`metrics`] and [`registry`]; [`store`]; [`ingest`], [`replay`],
//! [`rollup_flush`] and [`retention`]; [`api`]; [`app`]; [`cli`].
#![forbid(unsafe_code)]
// A panic in the gateway is a bug: errors are values outside tests.
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod aggregates;
pub mod api;
pub mod app;
pub mod audit;
pub mod cli;
pub mod config;
pub mod devices;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod profiles;
pub mod quality;
pub mod registry;
pub mod replay;
pub mod retention;
pub mod rollup_flush;
pub mod sources;
pub mod store;
