//! Operating a gateway: the admin API, HTTPS, metrics. One test binary per area; one module per topic.

mod admin;
mod hardening;
mod openapi;
mod tls;
