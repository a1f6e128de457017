//! `fnhost-reaper <runtime pid>`: what a zygote's init executes once it has
//! started the language runtime. It stays PID 1 of the zygote's pid
//! namespace and only reaps (see `fnhost_zygote::reap`), exiting with the
//! runtime's status when the runtime exits, which ends every process left
//! in the namespace.
//!
//! Why a binary of its own: init is the `fnhost` executable, whose
//! relocated data alone is ~0.4 MiB of private memory per process. Kept
//! resident for the life of every zygote, that was about a quarter of what
//! an idle function costs the host; this program costs ~0.1 MiB.

fn main() {
    let runtime = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse::<i32>().ok());
    let Some(runtime) = runtime.filter(|pid| *pid > 0) else {
        eprintln!("usage: fnhost-reaper <runtime pid> (run by a zygote's init, not by hand)");
        std::process::exit(2);
    };
    std::process::exit(fnhost_zygote::reap::reap_until_exit_of(runtime))
}
