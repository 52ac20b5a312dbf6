//! A real BIND `named` as a secondary of the server under test, on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
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
        Self::secondary_with_key(zones, primary, port, None)
    }

    /// `secondary`, asking the primary with the TSIG key in `key_file` (BIND's key format,
    /// included by `named.conf`): its SOA queries, transfers and accepted NOTIFY are signed.
    pub fn secondary_with_key(
        zones: &[&str],
        primary: SocketAddr,
        port: u16,
        key_file: Option<(&std::path::Path, &str)>,
    ) -> Self {
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
        let key = match key_file {
            Some((path, name)) => {
                config.push_str(&format!("include \"{}\";\n", path.display()));
                format!(" key \"{name}\"")
            }
            None => String::new(),
        };
        for zone in zones {
            config.push_str(&format!(
                "zone \"{zone}\" {{ type secondary; primaries {{ {} port {}{key}; }}; file \"{dir}/{zone}.bk\"; }};\n",
                primary.ip(),
                primary.port()
            ));
        }
        let config_path = folder.path().join("named.conf");
        std::fs::write(&config_path, config).expect("write named.conf");
        let log = std::fs::File::create(folder.path().join("named.log")).expect("named log");
        let process = Process::spawn_with_stderr(
            Command::new(named)
                .args(["-g", "-n", "1", "-c"])
                .arg(&config_path),
            log,
        );
        let named = Self {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            process,
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

/// A real NSD or Knot secondary of the server under test, on loopback; stopped (by PID) when
/// dropped. Their zone-file and transfer parsers are stricter than BIND's (Knot refuses a
/// message with trailing data), so they check what BIND would tolerate.
pub struct Secondary {
    pub address: SocketAddr,
    pub name: &'static str,
    _process: Process,
    folder: tempfile::TempDir,
    log_file: &'static str,
}

impl Secondary {
    /// NSD on 127.0.0.1:`port`, secondary of `primary` for `zone`, accepting NOTIFY from it.
    pub fn nsd(zone: &str, primary: SocketAddr, port: u16) -> Self {
        let nsd = require_tool("nsd", "nsd");
        let folder = tempfile::tempdir().expect("temporary folder");
        let dir = folder.path().display().to_string();
        let config = format!(
            "server:\n  ip-address: 127.0.0.1@{port}\n  server-count: 1\n  username: \"\"\n  \
             chroot: \"\"\n  zonesdir: \"{dir}\"\n  pidfile: \"{dir}/nsd.pid\"\n  database: \"\"\n  \
             xfrdfile: \"{dir}/xfrd.state\"\n  zonelistfile: \"{dir}/zone.list\"\n  \
             logfile: \"{dir}/secondary.log\"\n  xfrdir: \"{dir}\"\n  xfrd-reload-timeout: 0\n  \
             verbosity: 2\n  rrl-ratelimit: 0\n\
             remote-control:\n  control-enable: no\n\
             zone:\n  name: {zone}\n  zonefile: \"{dir}/{zone}.zone\"\n  \
             allow-notify: {ip} NOKEY\n  request-xfr: {ip}@{primary_port} NOKEY\n",
            ip = primary.ip(),
            primary_port = primary.port(),
        );
        let config_path = folder.path().join("nsd.conf");
        std::fs::write(&config_path, config).expect("write nsd.conf");
        let process = Process::spawn(Command::new(nsd).arg("-d").arg("-c").arg(&config_path));
        Self::started("nsd", process, folder, port, "secondary.log")
    }

    /// Knot on 127.0.0.1:`port`, secondary of `primary` for `zone`, accepting NOTIFY from it.
    pub fn knot(zone: &str, primary: SocketAddr, port: u16) -> Self {
        let knotd = require_tool("knotd", "knot");
        let folder = tempfile::tempdir().expect("temporary folder");
        let dir = folder.path().display().to_string();
        let config = format!(
            "server:\n    listen: 127.0.0.1@{port}\n    rundir: \"{dir}\"\n\
             log:\n  - target: \"{dir}/secondary.log\"\n    any: info\n\
             database:\n    storage: \"{dir}\"\n\
             remote:\n  - id: primary\n    address: {ip}@{primary_port}\n\
             acl:\n  - id: from_primary\n    address: {ip}\n    action: notify\n\
             zone:\n  - domain: {zone}\n    storage: \"{dir}\"\n    file: \"{zone}.zone\"\n    \
             master: primary\n    acl: from_primary\n    zonefile-sync: -1\n    \
             zonefile-load: none\n    journal-content: none\n",
            ip = primary.ip(),
            primary_port = primary.port(),
        );
        let config_path = folder.path().join("knot.conf");
        std::fs::write(&config_path, config).expect("write knot.conf");
        let process = Process::spawn(Command::new(knotd).arg("-c").arg(&config_path));
        Self::started("knot", process, folder, port, "secondary.log")
    }

    fn started(
        name: &'static str,
        process: Process,
        folder: tempfile::TempDir,
        port: u16,
        log_file: &'static str,
    ) -> Self {
        let secondary = Self {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            name,
            _process: process,
            folder,
            log_file,
        };
        let listening = wait_until(Duration::from_secs(20), || {
            dig(
                secondary.address,
                &["+tries=1", "+time=1", "nothing.invalid", "A"],
            )
            .contains("status:")
        });
        assert!(listening, "{name} did not start:\n{}", secondary.log());
        secondary
    }

    /// The serial the secondary serves for `zone`, if it has the zone loaded.
    pub fn serial(&self, zone: &str) -> Option<u32> {
        dig_serial(self.address, zone)
    }

    /// The secondary's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.folder.path().join(self.log_file)).unwrap_or_default()
    }
}
