//! fnhost dispatcher: the HTTP APIs on tokio + hyper. The invoke API routes
//! requests, admits bodies (size, JSON), runs invocations through the
//! host's pools, maps every error to a status and a JSON body, and serves
//! `/healthz` and `/metrics`; the admin API (own listener) changes the
//! config through the control plane. Both drain connections on shutdown.
#![forbid(unsafe_code)]

pub mod admin;
pub mod admin_auth;
pub mod connection;
pub mod control;
pub mod lambda;
pub mod lambda_control;
pub mod lambda_functions;
mod linger;
pub mod payload;
pub mod response;
pub mod routes;

pub use admin::Admin;
pub use admin_auth::AdminAuth;
pub use connection::{serve, ConnectionLimits, Listener};
pub use control::{ConfigSource, Control, ControlError};
pub use lambda_control::LambdaControl;
pub use routes::App;
