//! Integration tests: one binary, the real application on port 0, real PostgreSQL and Kafka
//! from `deploy/local/services.sh` (see `helpers`), real certificates and TLS handshakes.

mod adapter_batch;
mod api;
mod clocks;
mod connect;
mod connect_sql;
mod connections;
mod contract;
mod crash;
mod embedded;
mod evidence;
mod fake_cms;
mod helpers;
mod hj212;
mod identity;
mod ingest_sets;
mod layout;
mod mixed;
mod openapi;
mod permanent;
mod police;
mod police_faults;
mod police_log;
mod police_metrics;
mod police_store;
mod priors;
mod relay;
mod request_guard;
mod scaled_out;
mod sink;
mod store;
mod store_outbox;
mod supervise;
mod supervision;
mod transparency;
mod witness;
