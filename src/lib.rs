//! kubescaler: scales a Kubernetes node pool for stateful dedicated game servers.
//!
//! The scaling decision is a pure function ([`planner::plan_with`]) from a
//! [`model::ClusterSnapshot`], the cloud pool matched against it ([`model::CloudView`]), the
//! time and the planner settings to a [`planner::Plan`]. All I/O sits behind two traits,
//! [`kubernetes::Kubernetes`] and [`provider::NodePoolProvider`], driven by the loop in
//! [`scaler`]; the deletion sequence lives in [`actuator`], the ownership rule in
//! [`kubernetes::marks`].

#![warn(missing_docs)]

pub mod actuator;
pub mod agones;
pub mod buffer;
pub mod cli;
pub mod config;
pub mod explain;
pub mod http;
pub mod kubernetes;
pub mod leader;
pub mod logging;
pub mod model;
pub mod planner;
pub mod provider;
pub mod quantity;
pub mod scaler;
pub mod schedule;
pub mod scheduling;
pub mod selector;
pub mod simulate;
pub mod telemetry;
