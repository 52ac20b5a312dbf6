//! Test hosts in network namespaces of the test's own, reached over veth pairs (needs root).

use std::process::Command;

use super::require_tool;

/// Runs `ip` with `arguments`, panicking with its error output if it fails.
pub fn ip(arguments: &[&str]) {
    let output = Command::new(require_tool("ip", "iproute2"))
        .args(arguments)
        .output()
        .expect("run ip");
    assert!(
        output.status.success(),
        "`ip {}` failed: {}\nThis test creates network namespaces and veth pairs, which needs \
         root (CAP_NET_ADMIN); CI runs it as root.",
        arguments.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// A host in its own network namespace, reached through a veth pair.
pub struct Host {
    pub namespace: String,
    inside: String,
}

impl Host {
    /// Creates namespace `tag`, with `host_v4`/`peer_v4` (a /30) and `host_v6`/`peer_v6`
    /// (a /64) on the two ends of a veth pair.
    pub fn create(
        tag: &str,
        (host_v4, peer_v4): (&str, &str),
        (host_v6, peer_v6): (&str, &str),
    ) -> Self {
        let id = std::process::id() % 100_000;
        let namespace = format!("hdns{id}{tag}");
        let outside = format!("hdo{id}{tag}");
        let inside = format!("hdi{id}{tag}");
        ip(&["netns", "add", &namespace]);
        let host = Self {
            namespace: namespace.clone(),
            inside: inside.clone(),
        };
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", &inside, "netns", &namespace,
        ]);
        ip(&["addr", "add", &format!("{host_v4}/30"), "dev", &outside]);
        ip(&[
            "-6",
            "addr",
            "add",
            &format!("{host_v6}/64"),
            "dev",
            &outside,
            "nodad",
        ]);
        ip(&["link", "set", &outside, "up"]);
        ip(&[
            "-n",
            &namespace,
            "addr",
            "add",
            &format!("{peer_v4}/30"),
            "dev",
            &inside,
        ]);
        ip(&[
            "-n",
            &namespace,
            "-6",
            "addr",
            "add",
            &format!("{peer_v6}/64"),
            "dev",
            &inside,
            "nodad",
        ]);
        // Linux drops an interface's IPv6 addresses when it goes down, unless told to keep them.
        ip(&[
            "netns",
            "exec",
            &namespace,
            "sh",
            "-c",
            &format!("echo 1 > /proc/sys/net/ipv6/conf/{inside}/keep_addr_on_down"),
        ]);
        ip(&["-n", &namespace, "link", "set", "lo", "up"]);
        ip(&["-n", &namespace, "link", "set", &inside, "up"]);
        host
    }

    pub fn set_link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.namespace, "link", "set", &self.inside, state]);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Deleting the namespace deletes both ends of the veth pair.
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.namespace])
            .status();
    }
}
