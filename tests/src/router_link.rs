//! A router and a node as two network namespaces joined by one veth pair, for tests of one
//! session against a real router (BFD with FRR, BGP with BIRD): 198.51.100.0/24 and
//! 2001:db8:1::/64 only, nothing routed anywhere else. The pair is made inside the router's
//! namespace and its far end moved straight into the node's: it never appears in the machine's
//! own namespace.

use std::net::IpAddr;

use crate::netlab::run;

/// The router's end of the link.
pub const ROUTER_LINK: &str = "rl-r0";
/// The node's end.
pub const NODE_LINK: &str = "rl-n0";

/// One address family's pair of addresses.
#[derive(Debug, Clone, Copy)]
pub struct LinkFamily {
    pub name: &'static str,
    pub index: usize,
    pub router: &'static str,
    pub node: &'static str,
    pub prefix: u8,
}

pub const IPV4: LinkFamily = LinkFamily {
    name: "IPv4",
    index: 0,
    router: "198.51.100.1",
    node: "198.51.100.2",
    prefix: 24,
};
pub const IPV6: LinkFamily = LinkFamily {
    name: "IPv6",
    index: 1,
    router: "2001:db8:1::1",
    node: "2001:db8:1::2",
    prefix: 64,
};

// The addresses are the literals above.
#[allow(clippy::expect_used)]
impl LinkFamily {
    pub fn router_ip(&self) -> IpAddr {
        self.router.parse().expect("a literal address")
    }

    pub fn node_ip(&self) -> IpAddr {
        self.node.parse().expect("a literal address")
    }
}

/// The router and node namespaces and the veth between them; both deleted on drop. Named like
/// the lab's namespaces (`flb-<pid>-…`), so that a later lab removes them if this process dies
/// before its drop runs.
pub struct RouterLink {
    pub router: String,
    pub node: String,
}

impl RouterLink {
    /// Namespaces `flb-<pid>-<tag>-router` and `-node`.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let base = format!("flb-{}-{tag}", std::process::id());
        let link = Self {
            router: format!("{base}-router"),
            node: format!("{base}-node"),
        };
        for netns in [&link.router, &link.node] {
            run("ip", &["netns", "add", netns])?;
        }
        link.wire()?;
        Ok(link)
    }

    fn wire(&self) -> anyhow::Result<()> {
        // Made inside the router's namespace, its far end moved straight into the node's: the
        // pair never appears in the machine's own namespace.
        run(
            "ip",
            &[
                "-n",
                &self.router,
                "link",
                "add",
                ROUTER_LINK,
                "type",
                "veth",
                "peer",
                "name",
                NODE_LINK,
                "netns",
                &self.node,
            ],
        )?;
        for (netns, interface, side) in [
            (&self.router, ROUTER_LINK, true),
            (&self.node, NODE_LINK, false),
        ] {
            run("ip", &["-n", netns, "link", "set", "lo", "up"])?;
            // The IPv6 address must survive the link going down and up again.
            let keep = format!("net.ipv6.conf.{interface}.keep_addr_on_down=1");
            run("ip", &["netns", "exec", netns, "sysctl", "-qw", &keep])?;
            for family in [IPV4, IPV6] {
                let address = if side { family.router } else { family.node };
                let cidr = format!("{address}/{}", family.prefix);
                let mut args = vec!["-n", netns, "addr", "add", &cidr, "dev", interface];
                if family.index == IPV6.index {
                    args.push("nodad");
                }
                run("ip", &args)?;
            }
            run("ip", &["-n", netns, "link", "set", interface, "up"])?;
        }
        Ok(())
    }

    /// Takes the router's end down or up (the node sees its carrier go).
    pub fn set_router_link(&self, up: bool) -> anyhow::Result<()> {
        let state = if up { "up" } else { "down" };
        run(
            "ip",
            &["-n", &self.router, "link", "set", ROUTER_LINK, state],
        )?;
        Ok(())
    }
}

impl Drop for RouterLink {
    fn drop(&mut self) {
        for netns in [&self.node, &self.router] {
            let _ = run("ip", &["netns", "del", netns]);
        }
    }
}
