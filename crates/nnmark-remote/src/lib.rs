//! nnmark's remote side: serve a model over real inference protocols (`nnmark serve`), verify a
//! suspect through its API or as an ONNX file (`nnmark verify --endpoint`), and write or check
//! signed evidence of what was asked and answered.
//!
//! Kept out of the `nnmark` crate so that training and evaluation build without an HTTP stack.

#![warn(missing_docs)]

pub mod client;
pub mod demo;
pub mod evidence;
pub mod export;
pub mod onnx;
pub mod protocol;
pub mod server;
pub mod verify;
pub mod workflow;

pub use client::{Endpoint, EndpointConfig, HttpEndpoint, OracleEndpoint};
pub use protocol::{ClassNames, Protocol};
pub use server::{RunningServer, ServeConfig, ServedModel};
pub use verify::{EvidenceBody, RemoteVerifyOptions, verify_endpoint};
