//! The offline views (`logs`, `top`, `overview`) over real and synthetic flow logs. One test binary per area; one module per topic.

mod replay;
mod synthetic;
