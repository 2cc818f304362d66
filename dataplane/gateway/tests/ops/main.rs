//! Operating a gateway: the admin API, HTTPS, metrics, the DNS thread. One test binary per area; one module per topic.

mod admin;
mod console;
mod dns;
mod hardening;
mod health;
mod openapi;
mod syslog_tls;
mod tls;
