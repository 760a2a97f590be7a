//! Where readings go besides the store: each sink in its own module, fed from a spool the store fills in the readings' own commit.
//!
//! - [`influx`]: InfluxDB v2 (line protocol over HTTP, gzip, backoff, dead letters for points
//!   it refuses).

pub mod influx;
