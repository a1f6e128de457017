//! fnhost's Lambda control plane, without HTTP: AWS Signature Version 4
//! verification, safe extraction of deployment zips, the crash-safe store
//! of API-created functions under `<state_dir>/functions`, and the Lambda
//! JSON shapes with their mapping to fnhost config keys.
#![forbid(unsafe_code)]

pub mod api_error;
pub mod code_zip;
pub mod model;
pub mod runtime;
pub mod sigv4;
pub mod store;

pub use api_error::ApiError;
pub use code_zip::ZipLimits;
pub use model::FunctionRecord;
pub use sigv4::{Credentials, SignedRequest};
pub use store::Store;
