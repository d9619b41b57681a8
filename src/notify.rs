//! The systemd notification protocol (`sd_notify`): `READY=1` once the daemon is pulling,
//! `WATCHDOG=1` while its runtime is alive, `STOPPING=1` at shutdown, over the datagram
//! socket named by `NOTIFY_SOCKET`. No libsystemd: the protocol is one datagram of
//! `KEY=VALUE` lines.
//!
//! Role: let `Type=notify` units know when regrelay is really up and restart it when its
//! runtime wedges (`WatchdogSec=`).
//!
//! Must never: fail the daemon. Outside systemd (no socket) every call is a no-op, and a
//! send error is logged once at debug and otherwise ignored.
//!
//! `main` reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` and passes them in; this module reads
//! no environment variables itself.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where and how often to notify.
#[derive(Debug, Default)]
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// A notifier that does nothing (not under systemd).
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    /// From the values of `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket) and
    /// `WATCHDOG_USEC`. Unusable values disable the corresponding feature.
    pub fn new(notify_socket: Option<&str>, watchdog_usec: Option<&str>) -> Notifier {
        let socket = notify_socket.and_then(|s| {
            let addr = if let Some(name) = s.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt as _;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            } else {
                std::os::unix::net::SocketAddr::from_pathname(s).ok()?
            };
            let sock = UnixDatagram::unbound().ok()?;
            Some((sock, addr))
        });
        let watchdog = watchdog_usec
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&us| us > 0)
            .map(Duration::from_micros);
        Notifier { socket, watchdog }
    }

    /// Is there a socket to notify?
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// How often to send `WATCHDOG=1` (half the configured watchdog interval), if at all.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.socket.as_ref()?;
        self.watchdog.map(|w| w / 2)
    }

    fn send(&self, state: &str) {
        if let Some((sock, addr)) = &self.socket
            && let Err(e) = sock.send_to_addr(state.as_bytes(), addr)
        {
            tracing::debug!(error = %e, "systemd notification failed");
        }
    }

    /// The daemon is up and pulling.
    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=pulling events");
    }

    /// The runtime is alive.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// Shutdown has begun (draining in-flight work).
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=draining in-flight work");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let n = Notifier::new(path.to_str(), Some("20000000"));
        assert!(n.enabled());
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(10)));
        let mut buf = [0u8; 256];
        n.ready();
        let len = server.recv(&mut buf).unwrap();
        assert!(std::str::from_utf8(&buf[..len]).unwrap().starts_with("READY=1\n"));
        n.watchdog();
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
        n.stopping();
        let len = server.recv(&mut buf).unwrap();
        assert!(std::str::from_utf8(&buf[..len]).unwrap().starts_with("STOPPING=1\n"));
    }

    #[test]
    fn without_systemd_everything_is_a_no_op() {
        let n = Notifier::new(None, Some("1000"));
        assert!(!n.enabled());
        assert_eq!(n.watchdog_interval(), None);
        n.ready();
        n.watchdog();
        n.stopping();
        let bad = Notifier::new(Some("/nonexistent/dir/sock"), Some("not a number"));
        assert_eq!(bad.watchdog_interval(), None);
        bad.ready(); // a send error is swallowed
    }
}
