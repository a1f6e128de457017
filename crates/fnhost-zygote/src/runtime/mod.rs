//! Runtimes: how a function of each `runtime` becomes a zygote. Each
//! runtime (one file here, plus its shim) supplies the command init starts,
//! its own environment variables, its entry and the files it needs in the
//! shared runtime layer; [`zygote_spec`] assembles the whole spec.

use std::collections::BTreeMap;
use std::path::PathBuf;

use fnhost_config::{FunctionSpec, NetworkMode, Runtime};

use crate::settings::{SeccompChoice, ZygoteSettings};
use fnhost_sandbox::mount::Bind;

use crate::spec::{RuntimeEntry, ZygoteSpec};

mod exec;
mod node;
mod python;
mod rust;

pub use node::{NODE_SHIM, NODE_SHIM_PATH, NODE_THREADS};
pub use python::{PYTHON_SHIM, PYTHON_SHIM_PATH};

/// Size of a zygote's own /tmp (import-time scratch, unmounted once the
/// import is done: see `crate::reap`).
const ZYGOTE_TMP_BYTES: u64 = 16 << 20;
/// Where a function's code is, inside its root; its working directory.
const TASK_ROOT: &str = "/var/task";

/// What one runtime contributes to its functions' zygotes.
pub trait ZygoteRuntime: Sync {
    /// How init starts the runtime, and what `argv` is.
    fn entry(&self) -> RuntimeEntry;
    /// The runtime command (argv[0] is an absolute path inside the root).
    fn argv(&self, spec: &FunctionSpec) -> Vec<String>;
    /// Adds the runtime's own variables to `env` (which holds the common
    /// ones, the image's and the function's).
    fn add_env(&self, _spec: &FunctionSpec, _env: &mut BTreeMap<String, String>) {}
    /// Files it needs in the runtime layer shared by every function.
    fn files(&self) -> &'static [RuntimeFile] {
        &[]
    }
    /// Threads the runtime itself has when it forks (see
    /// [`ZygoteSettings::runtime_threads`]).
    fn threads(&self) -> u64 {
        1
    }
}

/// A file of the runtime layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeFile {
    /// Absolute path inside a root.
    pub path: &'static str,
    pub contents: FileContents,
    pub mode: u32,
}

/// What a runtime-layer file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileContents {
    /// Built into fnhost.
    Text(&'static str),
    /// The native shim library (`libfnhost_shim.so`), which the daemon reads
    /// from beside its executable.
    ShimLib,
}

/// The runtime of `runtime`.
pub fn of(runtime: Runtime) -> &'static dyn ZygoteRuntime {
    match runtime {
        Runtime::Python3 => &python::Python,
        Runtime::Exec => &exec::Exec,
        Runtime::Rust => &rust::Rust,
        Runtime::Nodejs => &node::Node,
    }
}

/// Every file of the runtime layer, each once, in a stable order.
pub fn layer_files() -> Vec<RuntimeFile> {
    let mut files: Vec<RuntimeFile> = Vec::new();
    for runtime in Runtime::ALL.iter().copied() {
        for file in of(runtime).files() {
            if !files.iter().any(|f| f.path == file.path) {
                files.push(*file);
            }
        }
    }
    files
}

/// What a function's root is made of, resolved by the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootParts {
    /// Empty host directory where the root is assembled.
    pub staging: PathBuf,
    /// Overlay lower dirs, topmost first (code, runtime, then the rest).
    pub layers: Vec<PathBuf>,
    pub binds: Vec<Bind>,
    /// The image config's `Env`, applied under the function's own `env`.
    pub image_env: Vec<(String, String)>,
    /// The runtime layer holds `fnhost-reaper` (see [`crate::reap`]).
    pub reaper: bool,
}

/// The spec of `spec`'s zygotes on `root`. `max_response_bytes` is the
/// host's `server.max_response_bytes`; `runtime_ids` the unprivileged uid
/// and gid the runtime runs as in the zygote's namespace.
pub fn zygote_spec(
    spec: &FunctionSpec,
    root: RootParts,
    max_response_bytes: usize,
    runtime_ids: (u32, u32),
) -> ZygoteSpec {
    let runtime = of(spec.runtime);
    let mut env: BTreeMap<String, String> = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("LANG", "C.UTF-8"),
        ("HOME", "/tmp"),
        ("LAMBDA_TASK_ROOT", TASK_ROOT),
        ("LAMBDA_RUNTIME_DIR", "/.fnhost/runtime"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.insert("AWS_LAMBDA_FUNCTION_NAME".into(), spec.name.clone());
    env.insert(
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(),
        spec.limits.memory_mb.to_string(),
    );
    env.extend(root.image_env);
    env.extend(spec.env.clone());
    // The runtime's own variables win over user ones (config rejects
    // FNHOST_* names in `env`; the runtimes remove them before function
    // code runs).
    runtime.add_env(spec, &mut env);
    let argv = runtime.argv(spec);
    let share_group = spec
        .pool
        .shares_snapshot_pages()
        .then(|| share_group(&argv, &root.layers, &root.binds));
    if let (Some(group), Runtime::Python3) = (share_group, spec.runtime) {
        // Dicts and sets are laid out by string hashes: one seed per group
        // (random per daemon start) keeps copies' heaps identical. A
        // function's own PYTHONHASHSEED wins.
        env.entry("PYTHONHASHSEED".into())
            .or_insert_with(|| group_hash_seed(group).to_string());
    }
    ZygoteSpec {
        function: spec.name.clone(),
        staging: root.staging,
        layers: root.layers,
        binds: root.binds,
        tmp_bytes: ZYGOTE_TMP_BYTES,
        hostname: spec.name.clone(),
        argv,
        entry: runtime.entry(),
        env: env.into_iter().collect(),
        cwd: PathBuf::from(TASK_ROOT),
        runtime_ids,
        share_group,
        reaper: root.reaper,
        settings: ZygoteSettings {
            seccomp: SeccompChoice::from_config(&spec.seccomp),
            max_response_bytes,
            own_network: spec.network == NetworkMode::None,
            runtime_threads: runtime.threads(),
        },
    }
}

/// The sharing group of zygotes started from `argv` on `layers` with
/// `binds`: equal for copies of identical code (the code layer is named by
/// its digest), so that their snapshots are compared with one base.
fn share_group(argv: &[String], layers: &[PathBuf], binds: &[Bind]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    (argv, layers).hash(&mut h);
    for bind in binds {
        (&bind.source, &bind.target).hash(&mut h);
    }
    h.finish()
}

/// `PYTHONHASHSEED` for a sharing group: keyed by a secret drawn once per
/// daemon start, so it cannot be guessed from the code (valid seeds are
/// 0..=4294967295; 0 would disable hashing randomisation altogether).
fn group_hash_seed(group: u64) -> u64 {
    use std::hash::BuildHasher;
    static SECRET: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    let hash = SECRET
        .get_or_init(std::hash::RandomState::new)
        .hash_one(group);
    (hash % 0xffff_ffff) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(runtime: &str, entry: &str) -> FunctionSpec {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[[functions]]\nname = \"f\"\nruntime = \"{runtime}\"\ncode = \"{}\"\n{entry}\nseccomp = \"unconfined\"\nenv = {{ PYTHONUNBUFFERED = \"0\", A = \"1\" }}\n",
            dir.path().display()
        );
        let config = fnhost_config::Config::parse(&text, "test", dir.path()).unwrap();
        config.functions[0].clone()
    }

    fn root() -> RootParts {
        RootParts {
            staging: "/staging".into(),
            layers: vec!["/code".into(), "/runtime".into()],
            binds: Vec::new(),
            image_env: vec![("A".into(), "image".into()), ("B".into(), "image".into())],
            reaper: true,
        }
    }

    fn env_of(spec: &ZygoteSpec) -> BTreeMap<String, String> {
        spec.env.iter().cloned().collect()
    }

    #[test]
    fn sharing_snapshot_pages_groups_identical_code_with_one_hash_seed() {
        let shared = "handler = \"h.handler\"\nhibernate_share_pages = true";
        let spec = |entry: &str, layers: &[&str]| {
            let mut parts = root();
            parts.layers = layers.iter().map(PathBuf::from).collect();
            zygote_spec(&function("python3", entry), parts, 100, (1000, 1000))
        };
        let a = spec(shared, &["/code", "/runtime"]);
        let b = spec(shared, &["/code", "/runtime"]);
        let other_code = spec(shared, &["/other", "/runtime"]);
        let plain = spec("handler = \"h.handler\"", &["/code", "/runtime"]);
        assert!(a.share_group.is_some());
        assert_eq!(a.share_group, b.share_group);
        assert_ne!(a.share_group, other_code.share_group);
        assert_eq!(plain.share_group, None);
        let seed = |s: &ZygoteSpec| env_of(s).get("PYTHONHASHSEED").cloned();
        assert_eq!(seed(&a), seed(&b));
        assert_ne!(seed(&a), seed(&other_code));
        let value: u64 = seed(&a).expect("seeded").parse().expect("a number");
        assert!((1..=0xffff_ffff).contains(&value), "{value}");
        assert_eq!(seed(&plain), None, "hash randomisation stays per process");
    }

    #[test]
    fn python_runs_the_shim_with_its_variables() {
        let spec = zygote_spec(
            &function("python3", "handler = \"h.handler\""),
            root(),
            100,
            (1000, 1000),
        );
        assert_eq!(spec.entry, RuntimeEntry::Exec);
        assert_eq!(
            spec.argv,
            ["/usr/bin/python3", "-s", "-B", PYTHON_SHIM_PATH]
        );
        // The runtime layer of `root()` holds the reaper: init will use it.
        assert!(spec.reaper);
        let env = env_of(&spec);
        assert_eq!(env["FNHOST_HANDLER"], "h.handler");
        assert_eq!(env["FNHOST_SHIM_LIB"], crate::SHIM_LIB_PATH);
        // The function's own value wins over the runtime's default.
        assert_eq!(env["PYTHONUNBUFFERED"], "0");
        assert_eq!(env["PYTHONDONTWRITEBYTECODE"], "1");
        assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "f");
        assert_eq!(spec.cwd, PathBuf::from("/var/task"));
    }

    #[test]
    fn function_env_overrides_the_image_env() {
        let spec = zygote_spec(
            &function("exec", "command = [\"/var/task/fn\"]"),
            root(),
            100,
            (1000, 1000),
        );
        let env = env_of(&spec);
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "image");
    }

    #[test]
    fn settings_are_typed_and_never_in_the_environment() {
        let spec = zygote_spec(
            &function("exec", "command = [\"/var/task/fn\"]"),
            root(),
            4096,
            (1000, 1000),
        );
        assert_eq!(spec.entry, RuntimeEntry::CommandPerInvocation);
        assert_eq!(spec.argv, ["/var/task/fn"]);
        assert_eq!(
            spec.settings,
            ZygoteSettings {
                seccomp: SeccompChoice::Unconfined,
                max_response_bytes: 4096,
                own_network: true,
                runtime_threads: 1,
            }
        );
        assert!(
            spec.env.iter().all(|(k, _)| !k.starts_with("FNHOST_")),
            "{:?}",
            spec.env
        );
    }

    #[test]
    fn runtime_layer_holds_each_shim_file_once() {
        let files = layer_files();
        let paths: Vec<&str> = files.iter().map(|f| f.path).collect();
        assert_eq!(
            paths,
            [PYTHON_SHIM_PATH, crate::SHIM_LIB_PATH, NODE_SHIM_PATH]
        );
        assert_eq!(files[1].contents, FileContents::ShimLib);
    }

    #[test]
    fn node_runs_its_shim_single_threaded_with_its_threads_allowed() {
        let spec = zygote_spec(
            &function("nodejs", "handler = \"src/app.handler\""),
            root(),
            100,
            (1000, 1000),
        );
        assert_eq!(spec.entry, RuntimeEntry::Exec);
        assert_eq!(spec.argv[0], "/usr/bin/node");
        assert!(spec.argv.contains(&"--single-threaded".to_string()));
        assert!(spec.argv.contains(&"--v8-pool-size=1".to_string()));
        assert_eq!(spec.argv.last().map(String::as_str), Some(NODE_SHIM_PATH));
        assert_eq!(spec.settings.runtime_threads, NODE_THREADS);
        let env = env_of(&spec);
        assert_eq!(env["FNHOST_HANDLER"], "src/app.handler");
        assert_eq!(env["FNHOST_SHIM_LIB"], crate::SHIM_LIB_PATH);
        assert!(!env.contains_key("NODE_OPTIONS"));
    }
}
