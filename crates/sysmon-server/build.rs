//! Bundles the dashboard's one third-party library, uPlot, into the binary.
//!
//! uPlot is not kept in the repository: `dashboard/package.json` pins its
//! version and `dashboard/package-lock.json` its checksum, and this script
//! installs it with `npm ci` into `OUT_DIR/dashboard-npm`, then copies the
//! two files the dashboard serves to `OUT_DIR/uplot/`, where
//! `src/routes/dashboard.rs` includes them. `npm ci` runs again only when
//! the package files change. `SYSMON_UPLOT_DIR=/path/to/uplot` (an unpacked
//! uplot package, e.g. a `node_modules/uplot`) skips npm, for offline builds.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The files of the uplot package the dashboard serves, by their path in
/// the package.
const UPLOT_FILES: [&str; 2] = ["dist/uPlot.iife.min.js", "dist/uPlot.min.css"];

const PACKAGE_FILES: [&str; 2] = ["package.json", "package-lock.json"];

/// The dashboard's own sources: served as they are, listed here so that an
/// edit to them reruns this script as the project asks (the script then
/// finds the packages unchanged and skips npm).
const SOURCES: [&str; 4] = ["index.html", "theme.js", "app.js", "app.css"];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let dashboard = manifest_dir.join("dashboard");
    for name in PACKAGE_FILES.iter().chain(SOURCES.iter()) {
        println!("cargo:rerun-if-changed=dashboard/{name}");
    }
    println!("cargo:rerun-if-env-changed=SYSMON_UPLOT_DIR");

    let package = match env::var_os("SYSMON_UPLOT_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => npm_install(&dashboard, &out_dir.join("dashboard-npm")),
    };

    let target = out_dir.join("uplot");
    fs::create_dir_all(&target).unwrap_or_else(|e| fail(&format!("creating {target:?}: {e}")));
    for file in UPLOT_FILES {
        let source = package.join(file);
        let name = Path::new(file)
            .file_name()
            .expect("constant has a file name");
        fs::copy(&source, target.join(name)).unwrap_or_else(|e| {
            fail(&format!(
                "the uplot package has no {file} ({source:?}: {e}); \
                 SYSMON_UPLOT_DIR must name an unpacked uplot package"
            ))
        });
    }
}

/// `npm ci` in `work` (a copy of the package files); returns the installed
/// uplot package's directory. Skipped when `work` already holds an install
/// from the same package files.
fn npm_install(dashboard: &Path, work: &Path) -> PathBuf {
    let package = work.join("node_modules").join("uplot");
    let unchanged = PACKAGE_FILES
        .iter()
        .all(|name| same_contents(&dashboard.join(name), &work.join(name)));
    if unchanged && UPLOT_FILES.iter().all(|file| package.join(file).is_file()) {
        return package;
    }

    fs::create_dir_all(work).unwrap_or_else(|e| fail(&format!("creating {work:?}: {e}")));
    for name in PACKAGE_FILES {
        fs::copy(dashboard.join(name), work.join(name))
            .unwrap_or_else(|e| fail(&format!("copying dashboard/{name}: {e}")));
    }
    // Windows ships npm as a batch file, which Command does not find by the
    // bare name.
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    let output = Command::new(npm)
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
        .current_dir(work)
        .output();
    match output {
        Ok(output) if output.status.success() => package,
        Ok(output) => {
            // npm's first lines name the cause; the rest is its stack.
            let stderr = String::from_utf8_lossy(&output.stderr);
            let cause: Vec<&str> = stderr.lines().take(8).collect();
            fail(&format!(
                "`npm ci` failed ({}):\n{}",
                output.status,
                cause.join("\n")
            ))
        }
        Err(e) => fail(&format!("cannot run `{npm}`: {e}")),
    }
}

fn same_contents(a: &Path, b: &Path) -> bool {
    matches!((fs::read(a), fs::read(b)), (Ok(a), Ok(b)) if a == b)
}

/// Stops the build with one message that says what is missing and how to
/// provide it.
fn fail(cause: &str) -> ! {
    panic!(
        "\n\nsysmon-server's dashboard bundles the uPlot chart library, which the build \
         installs with npm.\n{cause}\n\nInstall Node.js and npm (Debian/Ubuntu: \
         `apt-get install nodejs npm`) and make sure the npm registry is reachable, \
         or set SYSMON_UPLOT_DIR to an unpacked uplot package \
         (the version pinned in crates/sysmon-server/dashboard/package.json).\n\n"
    )
}
