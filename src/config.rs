//! Every flag and environment variable of the `connect-gate` command (clap), in one place.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::pipeline::check::providers::WorkerConfig;
use crate::pipeline::check::secrets_as::SecretsAs;
use crate::pipeline::render::inputs::InputSources;

#[derive(Parser)]
#[command(
    name = "connect-gate",
    version,
    about = "Keeps Kafka Connect connectors declared in ConfigMaps under GitOps"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Judge connector ConfigMaps: exit 0 if every connector is accepted, 1 if any is rejected.
    Check {
        #[command(flatten)]
        inputs: PipelineArgs,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print each accepted connector as one JSON line, exactly as it would be sent to Connect.
    Render {
        #[command(flatten)]
        inputs: PipelineArgs,
        /// Show values that came from variables or env instead of `****`.
        #[arg(long)]
        reveal: bool,
    },
    /// What the reconciler would do if these manifests were merged, read-only: exit 0 with no
    /// change, 1 if a connector is rejected, 2 on usage or I/O errors, 3 with changes under
    /// --fail-on-changes.
    Plan(Box<PlanArgs>),
    /// Run the sidecar: the admission webhook and the reconciler.
    Serve(Box<ServeArgs>),
    /// Write a development CA and serving certificate (ca.crt, tls.crt, tls.key).
    Certs(CertsArgs),
    /// Print a connector's current offsets as the "offsets" value of its declaration
    /// (`{"token": ..., "set": [...]}`), to copy, edit and commit.
    Offsets(OffsetsArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
    Text,
    Json,
    /// GitHub Actions workflow commands: an annotation at each problem's line.
    Github,
    /// A SARIF 2.1.0 log, for code scanning.
    Sarif,
}

/// The template inputs every pipeline command shares.
#[derive(Args, Debug)]
pub struct TemplateArgs {
    /// Directory of template variables (`*.properties` files and Secret-volume files); repeatable.
    #[arg(long = "vars-dir", env = "CONNECT_GATE_VARS_DIR", value_delimiter = ',')]
    pub vars_dirs: Vec<PathBuf>,
    /// `KEY=VALUE` lines that stand in for the process environment.
    /// (`check`, `plan` and `render` show templates no env var without it or
    /// --template-env-allow.)
    #[arg(long, env = "CONNECT_GATE_ENV_FILE")]
    pub env_file: Option<PathBuf>,
    /// Only env vars whose whole name matches this regex are visible to templates.
    /// (`check`, `plan` and `render` show templates no env var without it or --env-file.)
    #[arg(long, env = "CONNECT_GATE_TEMPLATE_ENV_ALLOW")]
    pub template_env_allow: Option<String>,
}

impl TemplateArgs {
    pub fn sources(&self) -> InputSources {
        InputSources {
            vars_dirs: self.vars_dirs.clone(),
            env_file: self.env_file.clone(),
            env_allow: self.template_env_allow.clone(),
        }
    }
}

/// The worker's config providers, and whether template inputs reach it through them.
#[derive(Args, Debug)]
pub struct ProviderArgs {
    /// The Kafka Connect worker's own properties file (the same file the worker reads): its
    /// `config.providers` judge every `${alias:path:key}` a connector config holds.
    #[arg(long, env = "CONNECT_GATE_WORKER_CONFIG")]
    pub worker_config: Option<PathBuf>,
    /// How template inputs reach the local worker: as values, or as the config-provider
    /// references it resolves (needs --worker-config).
    #[arg(long, env = "CONNECT_GATE_SECRETS_AS", value_enum, default_value_t = SecretsAs::Values)]
    pub secrets_as: SecretsAs,
}

impl ProviderArgs {
    /// The worker's providers, read now.
    pub fn load(&self) -> Result<Option<WorkerConfig>, String> {
        match (&self.worker_config, self.secrets_as) {
            (None, SecretsAs::References) => {
                Err("--secrets-as references needs --worker-config (the worker's properties file)".into())
            }
            (None, SecretsAs::Values) => Ok(None),
            (Some(file), _) => WorkerConfig::load(file).map(Some).map_err(|e| e.to_string()),
        }
    }
}

/// What `check` and `render` judge, and against which plugins.
#[derive(Args)]
pub struct PipelineArgs {
    #[command(flatten)]
    pub template: TemplateArgs,
    #[command(flatten)]
    pub providers: ProviderArgs,
    /// Deny a reference to a file or directory that does not exist here (by default, where
    /// the worker's paths are missing, as in CI, it is a warning).
    #[arg(long)]
    pub strict_references: bool,
    /// `[NAME=]FILE`: the JSON body of a `GET /connector-plugins`. Without NAME, the local
    /// worker's; with it, the list of destination NAME of --destinations, or of every
    /// ConfigMap labelled destination.cc when NAME is `destination.cc`. Repeatable.
    #[arg(long = "plugins", value_parser = parse_plugins_arg)]
    pub plugins: Vec<PluginsArg>,
    /// Fetch the local worker's plugin list from this worker.
    #[arg(long)]
    pub connect_url: Option<String>,
    /// The destinations file the sidecar is given: ConfigMaps are checked against the plugin
    /// list of their destination, and one naming no declared destination is rejected.
    #[arg(long)]
    pub destinations: Option<PathBuf>,
    /// YAML files, directories (recursive) or `-` for stdin.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// One `--plugins [NAME=]FILE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginsArg {
    /// `None`: the local worker's.
    pub destination: Option<String>,
    pub file: PathBuf,
}

/// `NAME=FILE` when what stands before the first `=` can be a destination name (a DNS label,
/// or `destination.cc`); anything else is a file name.
pub fn parse_plugins_arg(s: &str) -> Result<PluginsArg, String> {
    let named = s.split_once('=').filter(|(name, _)| {
        *name == "destination.cc"
            || (!name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
    });
    Ok(match named {
        Some((name, file)) => PluginsArg {
            destination: Some(name.to_string()),
            file: file.into(),
        },
        None => PluginsArg {
            destination: None,
            file: s.into(),
        },
    })
}

/// Durations are written like `5s`, `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 5s, 1m)"))
}

/// How `plan` prints its plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlanOutput {
    Text,
    Json,
}

/// `connect-gate plan`: the manifests as `check` takes them, and where to read what runs.
#[derive(Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub inputs: PipelineArgs,
    #[arg(long, value_enum, default_value_t = PlanOutput::Text)]
    pub output: PlanOutput,
    /// Exit 3 when the plan changes anything (default: 0).
    #[arg(long)]
    pub fail_on_changes: bool,
    /// The reconciled namespace (default: the kubeconfig context's).
    #[arg(long)]
    pub namespace: Option<String>,
    /// The Lease holding the ledger, as given to the sidecar.
    #[arg(long, default_value = "connect-gate-ledger")]
    pub ledger_name: String,
    /// Plan as a sidecar run with --prune-unmanaged.
    #[arg(long)]
    pub prune_unmanaged: bool,
    /// Plan as a sidecar run with --auto-restart.
    #[arg(long)]
    pub auto_restart: bool,
    /// The sidecar's --hash-key-file, so that connect-gate.io/applied hashes compare.
    #[arg(long)]
    pub hash_key_file: Option<PathBuf>,
}

/// `connect-gate serve`: the sidecar.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The Kafka Connect worker's REST API (the worker beside the sidecar): the destination
    /// `local`, where ConfigMaps without a destination label go.
    #[arg(long, env = "CONNECT_GATE_CONNECT_URL", default_value = "http://localhost:8083")]
    pub connect_url: String,
    /// YAML file of further destinations (other Connect clusters, Confluent Cloud) and the
    /// Confluent Cloud API key for ConfigMaps labelled destination.cc; see the README.
    #[arg(long, env = "CONNECT_GATE_DESTINATIONS")]
    pub destinations: Option<PathBuf>,
    #[command(flatten)]
    pub template: TemplateArgs,
    #[command(flatten)]
    pub providers: ProviderArgs,
    /// How often mounted variables and the env file are re-read (Secret volumes rotate).
    #[arg(long, env = "CONNECT_GATE_INPUTS_REFRESH", default_value = "10s", value_parser = parse_duration)]
    pub inputs_refresh: Duration,
    /// PEM certificate served by the webhook; reloaded when it changes on disk.
    #[arg(long, env = "CONNECT_GATE_TLS_CERT", required_unless_present = "no_webhook")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "CONNECT_GATE_TLS_KEY", required_unless_present = "no_webhook")]
    pub tls_key: Option<PathBuf>,
    /// The webhook's HTTPS address.
    #[arg(long, env = "CONNECT_GATE_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Plain-HTTP address for Prometheus metrics (`/metrics`).
    #[arg(long, env = "CONNECT_GATE_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// Namespace whose connector ConfigMaps are reconciled (default: the pod's own).
    #[arg(long, env = "CONNECT_GATE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Do not serve the admission webhook.
    #[arg(long, env = "CONNECT_GATE_NO_WEBHOOK")]
    pub no_webhook: bool,
    /// Do not reconcile connectors.
    #[arg(long, env = "CONNECT_GATE_NO_RECONCILE")]
    pub no_reconcile: bool,
    /// When the plugin list cannot be fetched and none is cached: admit with a warning, or deny.
    #[arg(long, env = "CONNECT_GATE_ON_PLUGINS_UNAVAILABLE", value_enum, default_value_t = OnPluginsUnavailable::Warn)]
    pub on_plugins_unavailable: OnPluginsUnavailable,
    /// How often the worker's plugin list is refreshed in the background.
    #[arg(long, env = "CONNECT_GATE_PLUGINS_REFRESH", default_value = "1m", value_parser = parse_duration)]
    pub plugins_refresh: Duration,
    /// Also ask the worker's config validator at admission, denying on its errors.
    #[arg(long, env = "CONNECT_GATE_VALIDATE_WITH_WORKER")]
    pub validate_with_worker: bool,
    /// The only username whose requests may change connect-gate's records on a ConfigMap (its
    /// connect-gate.io/ annotations, the removal of its finalizer). Default: the sidecar's own, as
    /// the API server names it (SelfSubjectReview), when this process also reconciles.
    #[arg(long, env = "CONNECT_GATE_CONTROLLER_USERNAME")]
    pub controller_username: Option<String>,
    /// Time budget for --validate-with-worker; safely under the webhook's 5s timeout.
    #[arg(long, env = "CONNECT_GATE_WORKER_VALIDATION_BUDGET", default_value = "3s", value_parser = parse_duration)]
    pub worker_validation_budget: Duration,
    /// Template sandboxes kept warm (default: one per CPU, fewer when the container's memory is
    /// tight). With --sandbox-memory-mib and the sidecar's own 192 MiB they must fit the
    /// container's memory limit (cgroup), or the sidecar does not start.
    #[arg(long, env = "CONNECT_GATE_SANDBOXES")]
    pub sandboxes: Option<usize>,
    /// Address-space limit of each template sandbox in MiB (default: what fits the container's
    /// memory limit beside the other sandboxes and the sidecar, at most 512).
    #[arg(long, env = "CONNECT_GATE_SANDBOX_MEMORY_MIB")]
    pub sandbox_memory_mib: Option<u64>,
    /// After SIGTERM, how long the webhook goes on answering (reporting not ready) before it
    /// stops: the time the cluster takes to drop the pod from the webhook Service's endpoints,
    /// so that no admission is sent to a closed port. The reconciler stops at once.
    #[arg(long, env = "CONNECT_GATE_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
    #[command(flatten)]
    pub reconcile: ReconcileArgs,
}

/// The reconciler's part of `serve`.
#[derive(Args, Debug, Clone)]
pub struct ReconcileArgs {
    /// Period of the full pass that re-applies drifted connectors and re-reads secrets.
    #[arg(long, env = "CONNECT_GATE_RESYNC", default_value = "60s", value_parser = parse_duration)]
    pub resync: Duration,
    /// Also delete connectors that no ConfigMap declares and connect-gate never created.
    #[arg(long, env = "CONNECT_GATE_PRUNE_UNMANAGED")]
    pub prune_unmanaged: bool,
    /// Restart FAILED connectors and tasks, with capped exponential backoff.
    #[arg(long, env = "CONNECT_GATE_AUTO_RESTART")]
    pub auto_restart: bool,
    /// The coordination.k8s.io Lease (in --namespace) whose holder reconciles.
    #[arg(long, env = "CONNECT_GATE_LEASE_NAME", default_value = "connect-gate")]
    pub lease_name: String,
    /// The Lease (in --namespace) whose annotation is the ledger of the connectors connect-gate
    /// created or adopted: only these are ever deleted. Only connect-gate may write it (RBAC).
    #[arg(long, env = "CONNECT_GATE_LEDGER_NAME", default_value = "connect-gate-ledger")]
    pub ledger_name: String,
    /// How long a Lease holder that stopped renewing keeps it before another replica takes over.
    #[arg(long, env = "CONNECT_GATE_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How long a config the worker rejected (400) waits before it is sent again unchanged;
    /// the wait doubles after each rejection, up to --rejected-retry-max. A changed config is
    /// sent at once. Some validators reach outside the config (a JDBC or Debezium connector's
    /// database), and reject a good config while what they reach is down.
    #[arg(long, env = "CONNECT_GATE_REJECTED_RETRY", default_value = "1m", value_parser = parse_duration)]
    pub rejected_retry: Duration,
    /// The longest wait between two attempts at a config the worker keeps rejecting.
    #[arg(long, env = "CONNECT_GATE_REJECTED_RETRY_MAX", default_value = "10m", value_parser = parse_duration)]
    pub rejected_retry_max: Duration,
    /// A file of at least 32 random bytes, readable by the sidecar only, that keys the
    /// `connect-gate.io/applied` hashes. Without it they leave out values containing an input.
    #[arg(long, env = "CONNECT_GATE_HASH_KEY_FILE")]
    pub hash_key_file: Option<PathBuf>,
}

/// What to do when the worker's plugin list cannot be had and none is cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnPluginsUnavailable {
    /// Admit (render checks still apply) with a warning.
    Warn,
    /// Deny.
    Deny,
}

/// `connect-gate certs`: write a CA and a serving certificate for local runs and tests.
#[derive(Args, Debug, Clone)]
pub struct CertsArgs {
    /// Directory to write ca.crt, tls.crt and tls.key into (plus ca.key for a new CA). An existing
    /// ca.crt + ca.key there is reused, so only the serving certificate changes.
    #[arg(long)]
    pub out: PathBuf,
    /// DNS name for the serving certificate; repeatable. Default (with no --ip): localhost.
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    /// IP address for the serving certificate; repeatable. Default (with no --dns): 127.0.0.1.
    #[arg(long = "ip")]
    pub ips: Vec<IpAddr>,
}

/// `connect-gate offsets`: read a connector's offsets from the local worker or a destination.
#[derive(Args, Debug)]
pub struct OffsetsArgs {
    /// The connector's name.
    pub name: String,
    /// The local worker's REST API (the destination `local`); default and env as for `serve`,
    /// so the command runs as is in the sidecar's container.
    #[arg(long, env = "CONNECT_GATE_CONNECT_URL", default_value = "http://localhost:8083")]
    pub connect_url: String,
    /// The destinations file the sidecar is given, which declares --destination.
    #[arg(long, env = "CONNECT_GATE_DESTINATIONS")]
    pub destinations: Option<PathBuf>,
    /// Read from this destination of --destinations (kind connect) instead of the local worker.
    #[arg(long)]
    pub destination: Option<String>,
    /// The token to print (default: the current UTC time, such as 2026-12-06T21-30-00Z): a new
    /// token is what makes the reconciler act on the offsets once.
    #[arg(long)]
    pub token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugins_name_a_destination_or_are_the_local_list() {
        let arg = |s| parse_plugins_arg(s).unwrap();
        assert_eq!(arg("p.json").destination, None);
        assert_eq!(arg("analytics=a.json").destination.as_deref(), Some("analytics"));
        assert_eq!(arg("analytics=a.json").file, PathBuf::from("a.json"));
        assert_eq!(
            arg("destination.cc=cc.json").destination.as_deref(),
            Some("destination.cc")
        );
        // Not a destination name before the `=`: a file name with `=` in it.
        assert_eq!(arg("dir/x=y.json").file, PathBuf::from("dir/x=y.json"));
        assert_eq!(arg("=y.json").destination, None);
    }
}
