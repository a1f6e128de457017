//! Attempts on the network: raw and packet sockets, netlink, and the host's
//! loopback (a sandbox has a loopback of its own only).

use std::os::raw::c_long;

use crate::outcome::{allowed, denied, fd_verdict, Outcome};

pub(crate) fn sockets(port: Option<u16>) -> Vec<(&'static str, Outcome)> {
    let mut out = Vec::new();
    let eth_p_all = (libc::ETH_P_ALL as u16).to_be() as i32;
    out.push((
        "socket_packet_raw",
        // SAFETY: integer arguments; the descriptor is closed by fd_verdict.
        fd_verdict(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, eth_p_all) } as c_long),
    ));
    out.push((
        "socket_inet_raw",
        fd_verdict(
            // SAFETY: integer arguments; the descriptor is closed by fd_verdict.
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) } as c_long,
        ),
    ));
    out.push((
        "socket_inet6_raw",
        fd_verdict(
            // SAFETY: integer arguments; the descriptor is closed by fd_verdict.
            unsafe { libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6) } as c_long,
        ),
    ));
    out.push((
        "socket_netlink_route",
        fd_verdict(
            // SAFETY: integer arguments; the descriptor is closed by fd_verdict.
            unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE) }
                as c_long,
        ),
    ));
    if let Some(port) = port {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        out.push((
            "connect_host_loopback",
            match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)) {
                Ok(_) => allowed(format!("connected to {addr}")),
                Err(e) => denied(format!("{addr}: {e}")),
            },
        ));
    }
    out
}
