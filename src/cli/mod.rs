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

/// `--registry-ca HOST=FILE` values: for each host, the PEM bundle of CA certificates it is
/// trusted with besides the system's roots (a registry with a private CA; the host is then
/// reached over HTTPS, loopback too). The bundle itself, and a host also given to
/// `--insecure-registry`, are checked where every registry config is
/// ([`RegistryConfig::validate`](crate::config::RegistryConfig::validate) and the client's
/// construction): a usage error before anything connects.
pub(crate) fn registry_cas(values: &[String]) -> Result<Vec<(String, std::path::PathBuf)>, String> {
    let mut out: Vec<(String, std::path::PathBuf)> = Vec::new();
    for v in values {
        let Some((host, file)) = v.split_once('=').filter(|(h, f)| !h.is_empty() && !f.is_empty()) else {
            return Err(format!("--registry-ca {v:?}: expected HOST=FILE"));
        };
        if !crate::oci::valid_host(host) {
            return Err(format!("--registry-ca {v:?}: {host:?} is not a registry host[:port]"));
        }
        if out.iter().any(|(h, _)| h == host) {
            return Err(format!("--registry-ca: {host} given twice"));
        }
        out.push((host.to_owned(), file.into()));
    }
    Ok(out)
}
