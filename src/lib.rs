//! messnetz: a gateway for a city's weather and climate sensor network.
//!
//! Data flows top to bottom, and so do the modules:
//!
//! - [`config`] turns the TOML file and `MESSNETZ__` variables into typed [`config::Settings`],
//!   including the `[quality]` thresholds ([`config::QualitySettings`]) and the MQTT
//!   topic-filter rules ([`config::topic`]).
//! - [`sources`] holds the inputs, the broker connection ([`sources::mqtt`]) and the embedded
//!   listener of the zero-setup default ([`sources::listener`], which acknowledges publishers
//!   only after storage), and one parser per message format (The Things Stack v3, ChirpStack
//!   v4, raw LoRaWAN frames), each producing an [`sources::Uplink`]; raw frames are
//!   authenticated and decrypted with ABP session keys ([`sources::lorawan`]). Each message
//!   carries its own acknowledgement ([`sources::Ack`]). [`status`] is the input's readiness.
//! - Citizens' sensors ([`citizens`]: registrations with hashed tokens) are kept in the store
//!   and merged into the registry; their pushes (`/v1/citizens/push`, the sensor.community
//!   firmware's JSON, [`sources::sensor_community`]) take the ingest path like MQTT messages,
//!   answered once committed ([`sources::reply`]); plain JSON over MQTT is [`sources::json`].
//!   Quality compares their readings with the nearest official stations
//!   ([`quality::neighbours`]). [`api::page`] is the public page at `/`.
//! - [`devices`] finds the device an uplink came from; [`profiles`] decodes its payload into
//!   values of canonical [`model::Quantity`]s; [`quality`] flags each value; [`aggregates`]
//!   holds the window maths of the rollups and the derived quantities (dew point, heat index).
//! - [`store`] is the storage boundary: what a batch commits ([`store::CommitStore`]), what
//!   the API reads ([`store::ReadStore`]) and the InfluxDB spool's table ([`store::Outbox`]).
//!   [`store::embedded`] implements it on redb, rollups included ([`store::embedded::rollups`]).
//! - [`sinks`] send readings on from the spool: [`sinks::influx`] to InfluxDB v2.
//! - [`ingest`] is a pure [`ingest::pipeline`] (message → readings or a typed
//!   [`ingest::Rejection`]) and the [`ingest::Ingest`] stage that batches, commits through the
//!   store boundary and acknowledges only after the commit.
//! - [`replay`] finds dead letters and runs them through the ingest path again: one service
//!   for the operator API and `messnetz dead-letters`.
//! - [`api`] serves the stored data over HTTP through [`store::ReadStore`]; [`api::admin`] is
//!   the operator API (tokens scoped to departments: devices, profiles, dead-letter replays,
//!   reload); [`audit`] records every change it makes. [`metrics`] counts what happened;
//!   [`registry`] holds the devices and profiles in use and reloads them when their files change.
//! - [`app`] wires the stages and owns shutdown.
//! - [`text`] writes times and numbers as chrono and `core::fmt` do, with less machinery:
//!   quality's reasons and the InfluxDB lines use it.
//! - [`cli`] is the command line, a module per command group; `main.rs` only parses the
//!   arguments, starts the gateway's tracing and hands the command over.
//!
//! Imports only point down, and no two modules import each other. From the ground up:
//! [`model`], [`text`], [`status`] and [`audit`]; [`config`] and [`aggregates`]; [`sources`],
//! [`devices`] (and [`citizens`] on it), [`profiles`] and [`quality`], which use only model
//! and config types (the store implements quality's [`quality::SeriesLookup`]); [`metrics`]
//! and [`registry`]; [`store`]; [`sinks`]; [`ingest`]; [`replay`]; [`api`]; [`app`]; [`cli`].
#![forbid(unsafe_code)]
// A panic in the gateway is a bug: errors are values outside tests.
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod aggregates;
pub mod api;
pub mod app;
pub mod audit;
pub mod citizens;
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
pub mod sinks;
pub mod sources;
pub mod status;
pub mod store;
pub mod text;
