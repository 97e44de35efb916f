//! Integration tests: one binary, the real application on port 0, real PostgreSQL and Kafka
//! from `deploy/local/services.sh` (see `helpers`), real certificates and TLS handshakes.

mod api;
mod crash;
mod embedded;
mod helpers;
mod relay;
mod store;
