//! Command-line front ends of the `regrelay` binary besides the daemon (`regrelay run` is
//! [`crate::app::run`]): [`copy`], [`promote`], [`snapshot`], [`sync`] and [`watch`]. Each one takes its parsed arguments, builds what
//! it needs through the composition root ([`crate::app`]), does its work, prints its
//! report and returns a typed result that the binary maps to an exit code. [`explain`]
//! tells what one event would make the daemon do.
//!
//! Must never: exit the process, look up environment variables the operator did not name
//! on the command line (the binary passes in what it read, such as the docker config
//! path), or reach into the daemon's layers (`queue`, `pipeline`, `admin`).

pub mod copy;
pub mod explain;
pub mod promote;
pub mod snapshot;
pub mod sync;
pub mod watch;
