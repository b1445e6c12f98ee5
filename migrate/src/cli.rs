//! The command line: arguments, where objects are read from, what goes to stdout and stderr, and
//! the exit code.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::cluster::{self, ClusterOptions};
use crate::convert::convert;
use crate::input::{self, Document, Source};

/// Everything was carried over (some of it written differently).
pub const EXIT_COMPLETE: u8 = 0;
/// Something could not be carried over; the rest was written.
pub const EXIT_INCOMPLETE: u8 = 1;
/// The input could not be read (or the output not written); nothing was written.
pub const EXIT_UNREADABLE: u8 = 2;

const AFTER_HELP: &str = "\
The FerroLB objects go to standard output as YAML, ready for `kubectl apply -f -`. Standard error
gets one line per MetalLB field: converted, changed (same meaning, written differently, or
renamed), or not carried over (FerroLB has no equivalent, e.g. a BGP VRF). Services need no
change: FerroLB reads MetalLB's Service annotations. Passwords are never shown.

Exit codes:
  0  everything was carried over (changes included)
  1  something could not be carried over (see the lines marked \"not carried over\");
     everything else was written
  2  the input could not be read: a file is missing or not YAML/JSON, or with --from-cluster the
     kubeconfig is wrong or the API unreachable; nothing was written (usage errors are 2 too)";

/// Converts MetalLB's configuration (IPAddressPools, L2Advertisements, BGP peers and
/// advertisements, the legacy ConfigMap `config`) into FerroLB's objects.
#[derive(Debug, Clone, Parser)]
#[command(name = "ferrolb-migrate", version, after_help = AFTER_HELP)]
pub struct Args {
    /// MetalLB manifests, YAML (multi-document) or JSON, `kind: List` included; `-` or none:
    /// standard input
    #[arg(value_name = "FILE", conflicts_with = "from_cluster")]
    pub files: Vec<String>,

    /// Read MetalLB's objects through the Kubernetes API instead of files (all namespaces)
    #[arg(long)]
    pub from_cluster: bool,

    /// Kubeconfig for --from-cluster [default: $KUBECONFIG, ~/.kube/config, or in-cluster]
    #[arg(long, value_name = "PATH", requires = "from_cluster")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context for --from-cluster [default: the current context]
    #[arg(long, value_name = "NAME", requires = "from_cluster")]
    pub context: Option<String>,
}

/// Runs the tool: reads, converts, writes the objects to stdout and the report to stderr.
pub fn run(args: Args) -> ExitCode {
    let documents = match read(&args) {
        Ok(documents) => documents,
        Err(message) => {
            eprintln!("ferrolb-migrate: {message}");
            return ExitCode::from(EXIT_UNREADABLE);
        }
    };
    let conversion = convert(&documents);
    let yaml = match conversion.to_yaml() {
        Ok(yaml) => yaml,
        Err(error) => {
            eprintln!("ferrolb-migrate: cannot write YAML: {error}");
            return ExitCode::from(EXIT_UNREADABLE);
        }
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_all(yaml.as_bytes())
        .and_then(|()| stdout.flush())
    {
        eprintln!("ferrolb-migrate: cannot write to standard output: {error}");
        return ExitCode::from(EXIT_UNREADABLE);
    }
    let _ = std::io::stderr()
        .lock()
        .write_all(conversion.report.render(conversion.written()).as_bytes());
    ExitCode::from(if conversion.report.complete() {
        EXIT_COMPLETE
    } else {
        EXIT_INCOMPLETE
    })
}

fn read(args: &Args) -> Result<Vec<Document>, String> {
    if args.from_cluster {
        let options = ClusterOptions {
            kubeconfig: args.kubeconfig.clone(),
            context: args.context.clone(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start: {e}"))?;
        let objects = runtime
            .block_on(cluster::read(&options))
            .map_err(|e| e.to_string())?;
        for remark in &objects.remarks {
            eprintln!("ferrolb-migrate: {remark}");
        }
        return Ok(objects.documents);
    }
    let sources: Vec<Source> = if args.files.is_empty() {
        vec![Source::Stdin]
    } else {
        args.files.iter().map(|f| Source::from_arg(f)).collect()
    };
    input::read_sources(&sources, std::io::stdin().lock()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn arguments_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn files_and_the_cluster_exclude_each_other() {
        assert!(Args::try_parse_from(["ferrolb-migrate", "a.yaml", "--from-cluster"]).is_err());
        assert!(Args::try_parse_from(["ferrolb-migrate", "--kubeconfig", "k"]).is_err());
        let args = Args::try_parse_from(["ferrolb-migrate", "--from-cluster", "--kubeconfig", "k"])
            .unwrap();
        assert!(args.from_cluster && args.files.is_empty());
    }
}
