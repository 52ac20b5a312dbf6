//! A real BIND `named` as a secondary of the server under test, on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{dig, dig_serial, require_tool, wait_until, Process};

/// A `named` process, secondary for some zones; stopped (by PID) when dropped.
pub struct Named {
    pub address: SocketAddr,
    process: Process,
    folder: tempfile::TempDir,
}

impl Named {
    /// Starts `named` on 127.0.0.1:`port` as a secondary of `primary` for each zone in
    /// `zones`; its refresh timer comes from the primary's SOA, so with a long refresh it
    /// follows only NOTIFY. `port` comes from `free_port()`, chosen before the primary starts
    /// so the primary's `also_notify` can name it.
    pub fn secondary(zones: &[&str], primary: SocketAddr, port: u16) -> Self {
        let named = require_tool("named", "bind9");
        let folder = tempfile::tempdir().expect("temporary folder");
        let dir = folder.path().display().to_string();
        let mut config = format!(
            "options {{\n  directory \"{dir}\";\n  listen-on port {port} {{ 127.0.0.1; }};\n  \
             listen-on-v6 {{ none; }};\n  pid-file \"{dir}/named.pid\";\n  recursion no;\n  \
             notify no;\n  dnssec-validation no;\n  session-keyfile \"{dir}/session.key\";\n  \
             managed-keys-directory \"{dir}\";\n  max-records-per-type 0;\n  max-types-per-name 0;\n}};\n\
             controls {{ }};\n"
        );
        for zone in zones {
            config.push_str(&format!(
                "zone \"{zone}\" {{ type secondary; primaries {{ {} port {}; }}; file \"{dir}/{zone}.bk\"; }};\n",
                primary.ip(),
                primary.port()
            ));
        }
        let config_path = folder.path().join("named.conf");
        std::fs::write(&config_path, config).expect("write named.conf");
        let log = std::fs::File::create(folder.path().join("named.log")).expect("named log");
        let child = Command::new(named)
            .args(["-g", "-n", "1", "-c"])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start named");
        let named = Self {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            process: Process { child },
            folder,
        };
        let listening = wait_until(Duration::from_secs(20), || {
            dig(named.address, &["version.bind", "CH", "TXT"]).contains("status:")
        });
        assert!(listening, "named did not start:\n{}", named.log());
        named
    }

    /// The serial `named` serves for `zone`, if it has the zone loaded.
    pub fn serial(&self, zone: &str) -> Option<u32> {
        dig_serial(self.address, zone)
    }

    /// `named`'s log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.folder.path().join("named.log")
    }
}
