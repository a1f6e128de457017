//! Validation of `[server]`: the listen address, the state directory (resolved
//! against the config's directory), the cgroup subtree name and the size limits.

use std::net::SocketAddr;
use std::path::Path;

use crate::model::{AdminListen, FavorDynmodsMode, HttpLimits, ServerConfig};
use crate::schema::RawServer;
use crate::span::KeyPath;
use crate::validate::{bounded, invalid, to_u64, to_usize, Invalid};

/// 1 GiB: the bound of `max_payload_bytes` and `max_response_bytes`.
const ONE_GIB: i64 = 1 << 30;

pub(crate) fn server(
    raw: &RawServer,
    path: &KeyPath,
    base_dir: &Path,
) -> Result<ServerConfig, Invalid> {
    let mut server = ServerConfig::default();
    if let Some(listen) = &raw.listen {
        server.listen = listen.parse::<SocketAddr>().map_err(|_| {
            invalid(
                path.key("listen"),
                format!("{listen:?} is not an IP:PORT address; write e.g. \"127.0.0.1:8080\" or \"[::1]:8080\""),
            )
        })?;
    }
    if let Some(state_dir) = &raw.state_dir {
        if state_dir.is_empty() {
            return Err(invalid(
                path.key("state_dir"),
                "must not be empty; write a directory path such as \"/var/lib/fnhost\"",
            ));
        }
        let resolved = base_dir.join(state_dir);
        if !resolved.is_absolute() {
            return Err(invalid(
                path.key("state_dir"),
                format!(
                    "resolves to {}, which is not absolute; use an absolute path",
                    resolved.display()
                ),
            ));
        }
        server.state_dir = resolved;
    }
    if let Some(cgroup_root) = &raw.cgroup_root {
        let charset_ok = cgroup_root
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !charset_ok
            || !(1..=64).contains(&cgroup_root.len())
            || cgroup_root == "."
            || cgroup_root == ".."
        {
            return Err(invalid(
                path.key("cgroup_root"),
                format!("{cgroup_root:?} is not a valid cgroup name; use 1 to 64 characters from A-Z a-z 0-9 _ . - (not \".\" or \"..\")"),
            ));
        }
        server.cgroup_root = cgroup_root.clone();
    }
    if let Some(value) = raw.max_payload_bytes {
        server.max_payload_bytes = to_usize(bounded(
            value,
            &path.key("max_payload_bytes"),
            1,
            ONE_GIB,
            " bytes",
        )?);
    }
    if let Some(value) = raw.max_response_bytes {
        server.max_response_bytes = to_usize(bounded(
            value,
            &path.key("max_response_bytes"),
            1,
            ONE_GIB,
            " bytes",
        )?);
    }
    if let Some(value) = raw.shutdown_grace_ms {
        server.shutdown_grace_ms = to_u64(bounded(
            value,
            &path.key("shutdown_grace_ms"),
            0,
            i64::MAX,
            " ms",
        )?);
    }
    if let Some(listen) = &raw.admin_listen {
        server.admin_listen = if listen == "off" {
            AdminListen::Off
        } else if let Some(socket) = listen.strip_prefix("unix:") {
            if !socket.starts_with('/') {
                return Err(invalid(
                    path.key("admin_listen"),
                    format!("{listen:?}: the Unix socket path must be absolute, e.g. \"unix:/run/fnhost/admin.sock\""),
                ));
            }
            AdminListen::Unix(socket.into())
        } else {
            AdminListen::Tcp(listen.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    path.key("admin_listen"),
                    format!("{listen:?} is not \"IP:PORT\", \"unix:/path\" or \"off\""),
                )
            })?)
        };
    }
    if let Some(token) = &raw.admin_token {
        if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                path.key("admin_token"),
                "must be at least 16 characters without spaces (e.g. from `openssl rand -hex 32`)",
            ));
        }
        server.admin_token = Some(token.clone());
    }
    if !server.admin_listen.is_local() && server.admin_token.is_none() {
        return Err(invalid(
            path.key("admin_listen"),
            "the admin API listens beyond loopback, so server.admin_token is required",
        ));
    }
    if let Some(value) = raw.user_namespace {
        server.user_namespace = value;
    }
    let size = i64::from(crate::model::USERNS_SIZE);
    if let Some(value) = raw.userns_ranges {
        let max = i64::from(u32::MAX) / size - 1;
        server.userns_ranges =
            u32::try_from(bounded(value, &path.key("userns_ranges"), 1, max, "")?)
                .expect("bounded to u32");
    }
    if let Some(value) = raw.userns_host_base {
        let max = i64::from(u32::MAX) - size * i64::from(server.userns_ranges);
        server.userns_host_base =
            u32::try_from(bounded(value, &path.key("userns_host_base"), 1, max, "")?)
                .expect("bounded to u32");
    } else if i64::from(server.userns_host_base) + size * i64::from(server.userns_ranges)
        > i64::from(u32::MAX)
    {
        return Err(invalid(
            path.key("userns_ranges"),
            format!(
                "{} ranges of {size} ids from userns_host_base = {} pass 2^32; lower one of them",
                server.userns_ranges, server.userns_host_base
            ),
        ));
    }
    if server.user_namespace {
        check_subid_overlap(&server, path)?;
    }
    if let Some(value) = raw.memory_budget_mb {
        server.memory_budget_mb = to_u64(bounded(
            value,
            &path.key("memory_budget_mb"),
            0,
            1 << 40,
            " MiB",
        )?);
    }
    server.http = http_limits(raw, path)?;
    server.control_plane = crate::control_plane::control_plane(raw, path, base_dir)?;
    if let Some(value) = raw.function_metrics_max {
        server.function_metrics_max = to_usize(bounded(
            value,
            &path.key("function_metrics_max"),
            0,
            1_000_000,
            " functions",
        )?);
    }
    if let Some(mode) = &raw.cgroup_favordynmods {
        server.cgroup_favordynmods = FavorDynmodsMode::from_toml(mode).ok_or_else(|| {
            invalid(
                path.key("cgroup_favordynmods"),
                format!("{mode:?} is not a mode; use \"auto\" (set it, warn if refused), \"on\" (set it or refuse to start) or \"keep\" (leave the host's setting alone)"),
            )
        })?;
    }
    if (server.http.max_payload_memory_mb << 20) < server.max_payload_bytes as u64 {
        return Err(invalid(
            path.key("max_payload_memory_mb"),
            format!(
                "{} MiB cannot hold even one request of max_payload_bytes = {}; raise it or lower max_payload_bytes",
                server.http.max_payload_memory_mb, server.max_payload_bytes
            ),
        ));
    }
    Ok(server)
}

/// Refuses a user-namespace range that a user of this machine also owns.
fn check_subid_overlap(server: &ServerConfig, path: &KeyPath) -> Result<(), Invalid> {
    let files: Vec<&Path> = crate::subid::SUBID_FILES.iter().map(Path::new).collect();
    let start = u64::from(server.userns_host_base);
    let count = u64::from(crate::model::USERNS_SIZE) * u64::from(server.userns_ranges);
    let Some(hit) = crate::subid::first_overlap(&files, start, count) else {
        return Ok(());
    };
    let free =
        crate::subid::free_base(&files, crate::model::DEFAULT_USERNS_HOST_BASE.into(), count);
    Err(invalid(
        path.key("userns_host_base"),
        format!(
            "host ids {start}..{} overlap {}:{} ({}:{}:{}), delegated to user {}: that user would own fnhost's sandboxes; \
             choose a range no user owns, e.g. userns_host_base = {free}",
            start + count - 1,
            hit.file.display(),
            hit.line,
            hit.owner,
            hit.start,
            hit.count,
            hit.owner
        ),
    ))
}

/// One hour: the longest header or body timeout accepted.
const ONE_HOUR_MS: i64 = 3_600_000;

fn http_limits(raw: &RawServer, path: &KeyPath) -> Result<HttpLimits, Invalid> {
    let mut http = HttpLimits::default();
    if let Some(value) = raw.header_timeout_ms {
        http.header_timeout_ms = to_u64(bounded(
            value,
            &path.key("header_timeout_ms"),
            100,
            ONE_HOUR_MS,
            " ms",
        )?);
    }
    if let Some(value) = raw.body_timeout_ms {
        http.body_timeout_ms = to_u64(bounded(
            value,
            &path.key("body_timeout_ms"),
            100,
            ONE_HOUR_MS,
            " ms",
        )?);
    }
    if let Some(value) = raw.max_connections {
        http.max_connections = to_usize(bounded(
            value,
            &path.key("max_connections"),
            1,
            1_000_000,
            "",
        )?);
    }
    if let Some(value) = raw.max_payload_memory_mb {
        http.max_payload_memory_mb = to_u64(bounded(
            value,
            &path.key("max_payload_memory_mb"),
            1,
            1 << 20,
            " MiB",
        )?);
    }
    if let Some(value) = raw.max_async_invocations {
        http.max_async_invocations = to_usize(bounded(
            value,
            &path.key("max_async_invocations"),
            0,
            1_000_000,
            "",
        )?);
    }
    Ok(http)
}

#[cfg(test)]
mod tests {
    use crate::validate::test_support::{assert_invalid, base, parse};

    #[test]
    fn server_values_are_checked() {
        assert_invalid(
            "[server]\nlisten = \"localhost:80\"\n",
            2,
            "server.listen",
            "IP:PORT",
        );
        assert_invalid(
            "[server]\n\ncgroup_root = \"..\"\n",
            3,
            "server.cgroup_root",
            "not \".\"",
        );
        assert_invalid(
            "[server]\ncgroup_root = \"a/b\"\n",
            2,
            "server.cgroup_root",
            "A-Z a-z 0-9",
        );
        assert_invalid(
            "[server]\nmax_payload_bytes = 0\n",
            2,
            "server.max_payload_bytes",
            "between 1 and 1073741824",
        );
        assert_invalid(
            "[server]\nmax_response_bytes = 1073741825\n",
            2,
            "server.max_response_bytes",
            "got 1073741825",
        );
        assert_invalid(
            "[server]\ncgroup_favordynmods = \"yes\"\n",
            2,
            "server.cgroup_favordynmods",
            "use \"auto\"",
        );
        assert_invalid(
            "[server]\nfunction_metrics_max = -1\n",
            2,
            "server.function_metrics_max",
            "between 0 and 1000000 functions, got -1",
        );
        assert_invalid(
            "[server]\nshutdown_grace_ms = -1\n",
            2,
            "server.shutdown_grace_ms",
            "at least 0",
        );
        assert_invalid(
            "[server]\nstate_dir = \"\"\n",
            2,
            "server.state_dir",
            "must not be empty",
        );
    }

    #[test]
    fn id_ranges_must_end_below_2_32() {
        // 4,194,303 ranges of 1024 ids fit from 1; from the default base not.
        assert_invalid(
            "[server]\nuser_namespace = false\nuserns_ranges = 4000000\n",
            3,
            "server.userns_ranges",
            "pass 2^32",
        );
        assert_invalid(
            "[server]\nuser_namespace = false\nuserns_ranges = 4000000\nuserns_host_base = 300000000\n",
            4,
            "server.userns_host_base",
            "between 1 and",
        );
        assert_invalid(
            "[server]\nuserns_ranges = 0\n",
            2,
            "server.userns_ranges",
            "between 1 and",
        );
        let config = parse(
            "[server]\nuser_namespace = false\nuserns_ranges = 10\n",
            std::path::Path::new("/"),
        )
        .unwrap();
        assert_eq!(config.server.userns_ranges, 10);
    }

    #[test]
    fn http_limits_are_checked() {
        assert_invalid(
            "[server]\nheader_timeout_ms = 0\n",
            2,
            "server.header_timeout_ms",
            "between 100 and 3600000",
        );
        assert_invalid(
            "[server]\n\nbody_timeout_ms = 99\n",
            3,
            "server.body_timeout_ms",
            "got 99",
        );
        assert_invalid(
            "[server]\nmax_connections = 0\n",
            2,
            "server.max_connections",
            "between 1 and 1000000",
        );
        assert_invalid(
            "[server]\nmax_payload_bytes = 8388608\nmax_payload_memory_mb = 4\n",
            3,
            "server.max_payload_memory_mb",
            "cannot hold even one request",
        );
        let dir = base();
        let config = parse(
            "[server]\nheader_timeout_ms = 1000\nbody_timeout_ms = 2000\nmax_connections = 8\nmax_payload_memory_mb = 64\nmax_async_invocations = 0\n",
            dir.path(),
        )
        .expect("valid");
        let http = config.server.http;
        assert_eq!(config.server.function_metrics_max, 50, "the default");
        let config = parse("[server]\nfunction_metrics_max = 0\n", dir.path()).expect("valid");
        assert_eq!(config.server.function_metrics_max, 0);
        assert_eq!(
            (
                http.header_timeout_ms,
                http.body_timeout_ms,
                http.max_connections
            ),
            (1000, 2000, 8)
        );
        assert_eq!(
            (http.max_payload_memory_mb, http.max_async_invocations),
            (64, 0)
        );
    }

    #[test]
    fn admin_listener_rules() {
        assert_invalid(
            "[server]\nadmin_listen = \"0.0.0.0:9000\"\n",
            2,
            "server.admin_listen",
            "admin_token is required",
        );
        assert_invalid(
            "[server]\nadmin_listen = \"unix:rel.sock\"\n",
            2,
            "server.admin_listen",
            "must be absolute",
        );
        assert_invalid(
            "[server]\nadmin_token = \"short\"\n",
            2,
            "server.admin_token",
            "at least 16",
        );
        let dir = base();
        let config = parse(
            "[server]\nadmin_listen = \"0.0.0.0:9000\"\nadmin_token = \"0123456789abcdef0123\"\nmemory_budget_mb = 4096\n",
            dir.path(),
        )
        .expect("valid");
        assert!(!config.server.admin_listen.is_local());
        assert_eq!(config.server.memory_budget_mb, 4096);
        let config = parse(
            "[server]\nadmin_listen = \"unix:/run/a.sock\"\n",
            dir.path(),
        )
        .expect("valid");
        assert_eq!(
            config.server.admin_listen,
            crate::AdminListen::Unix("/run/a.sock".into())
        );
    }

    #[test]
    fn relative_state_dir_resolves_against_the_base() {
        let dir = base();
        let config = parse(
            "[server]\nstate_dir = \"run/state\"\nlisten = \"[::1]:0\"\n",
            dir.path(),
        )
        .expect("valid");
        assert_eq!(config.server.state_dir, dir.path().join("run/state"));
        assert!(config.server.listen.is_ipv6());
    }

    #[test]
    fn favordynmods_mode_defaults_to_auto_and_parses_each_mode() {
        let parse = |text: &str| {
            crate::Config::parse(text, "t.toml", std::path::Path::new("/etc/fnhost"))
                .expect("valid")
                .server
                .cgroup_favordynmods
        };
        assert_eq!(parse("[server]\n"), crate::FavorDynmodsMode::Auto);
        for mode in crate::FavorDynmodsMode::ALL {
            let text = format!("[server]\ncgroup_favordynmods = \"{}\"\n", mode.as_str());
            assert_eq!(parse(&text), mode);
        }
    }
}
