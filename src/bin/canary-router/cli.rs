//! The command line: clap's derive, with help that reads like kubectl's (a summary,
//! a description, flags, examples).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::{check, render, status, Error};

const ABOUT: &str = "canary-router renders, checks and shows the canary-router filter's \
    configuration, from KServe's own InferenceService objects and with the filter's own code.";

#[derive(Parser)]
#[command(name = "canary-router", version, about = ABOUT, long_about = None,
          after_help = "Use \"canary-router <command> --help\" for more information about a command.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Render(Box<RenderArgs>),
    Check(CheckArgs),
    Status(StatusArgs),
}

/// Render the WasmPlugin, Gateway and VirtualServices for InferenceServices.
///
/// Reads InferenceServices as `kubectl get inferenceservices -A -o json` prints them (a
/// List, or one object; JSON or YAML) and writes the manifests that route them through
/// canary-router on the Istio ingress gateway: one WasmPlugin with a service per
/// InferenceService (hosts from status.url and the predictor's url, revisions from
/// latestReadyRevision and latestRolledoutRevision, canaryTrafficPercent from the spec,
/// tagRouting from the serving.kserve.io/enable-tag-routing annotation), a Gateway for
/// their hosts, and a VirtualService per InferenceService with one route per revision.
///
/// Notes on what was skipped or differs from KServe's status go to standard error. An
/// object that cannot be mapped is an error naming it and the field: then nothing is
/// written and the exit status is 1. The output always passes `canary-router check`.
#[derive(Args)]
#[command(after_help = RENDER_EXAMPLES)]
struct RenderArgs {
    /// InferenceServices: a file, or - for standard input.
    #[arg(value_name = "FILE")]
    input: String,
    /// Namespace of the WasmPlugin and the Gateway.
    #[arg(short, long, default_value = "istio-system")]
    namespace: String,
    /// Name of the WasmPlugin and the Gateway.
    #[arg(long, default_value = "canary-router")]
    name: String,
    /// The filter's OCI image url. Without it (or --image-from), a placeholder.
    #[arg(long, value_name = "URL", conflicts_with = "image_from")]
    image: Option<String>,
    /// The image manifest digest Istio checks the pulled image against (64 hex digits).
    #[arg(long, value_name = "HEX", conflicts_with = "image_from")]
    sha256: Option<String>,
    /// Take url and sha256 from the WasmPlugin `make push` wrote: a file, or a directory
    /// holding wasmplugin.yaml (target/istio).
    #[arg(long, value_name = "PATH")]
    image_from: Option<String>,
    /// Label of the gateway pods, for the WasmPlugin and the Gateway (repeatable).
    #[arg(
        short = 'l',
        long,
        value_name = "LABEL=VALUE",
        default_value = "istio=ingressgateway"
    )]
    selector: Vec<String>,
    /// Bind the VirtualServices to this existing Gateway instead of rendering one.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    gateway: Option<String>,
    /// Service fields merged into every service (JSON), or into one: NAME=JSON, where NAME
    /// is the InferenceService's name or NAMESPACE/NAME. @FILE reads the JSON from a file.
    /// Later fragments win (RFC 7386 merge); repeatable.
    #[arg(long, value_name = "[NAME=]JSON")]
    policy: Vec<String>,
    /// Top-level plugin configuration fields (JSON or @FILE), e.g. {"statusPath":
    /// "/canary-router/status"}; repeatable.
    #[arg(long, value_name = "JSON")]
    config: Vec<String>,
    /// Where `:explain` requests of Serverless InferenceServices go, as in KServe.
    #[arg(
        long,
        value_name = "HOST",
        default_value = "knative-local-gateway.istio-system.svc.cluster.local"
    )]
    local_gateway: String,
    /// Output format: YAML documents, or one v1 List in JSON.
    #[arg(short, long, value_enum, default_value = "yaml")]
    output: render::Format,
}

const RENDER_EXAMPLES: &str = "Examples:
  # Render, check and apply the manifests for every InferenceService in the cluster
  kubectl get isvc -A -o json | canary-router render - | canary-router check - | kubectl apply -f -

  # With the image `make push` pushed, health checks for every service, and automatic
  # rollback for one
  canary-router render isvcs.json --image-from target/istio \\
    --policy '{\"healthCheck\": {\"path\": \"/v2/health/ready\"}}' \\
    --policy 'kserve-test/sklearn-iris={\"autoRollback\": {\"maxErrorRate\": 0.05}}'";

/// Check WasmPlugin manifests and plugin configurations with the filter's own compiler.
///
/// Every WasmPlugin's pluginConfig (as the JSON Istio hands the filter), every Envoy wasm
/// filter's configuration string (bootstraps, ECDS resources) and every bare plugin
/// configuration (JSON, taken byte for byte) in the files is compiled by the filter's
/// own configuration code. A refusal prints what Envoy would log after `configuration
/// rejected: `, naming the file and the document; then the exit status is 1. Other
/// objects (Gateways, VirtualServices) are skipped.
///
/// Reports go to standard error. Reading standard input (-), check writes that input to
/// standard output once every configuration in it passes, so it can sit in a pipe
/// before `kubectl apply -f -`.
#[derive(Args)]
#[command(after_help = CHECK_EXAMPLES)]
struct CheckArgs {
    /// Files to check; - for standard input.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<String>,
    /// Report refusals only.
    #[arg(short, long)]
    quiet: bool,
    /// Also report the objects skipped.
    #[arg(short, long, conflicts_with = "quiet")]
    verbose: bool,
}

const CHECK_EXAMPLES: &str = "Examples:
  # Check the shipped manifests and the local Envoy configuration
  canary-router check istio/*.yaml envoy/envoy.yaml

  # Check a bare plugin configuration
  canary-router check plugin-config.json";

/// Show the filter's status view as `kubectl get isvc` prints InferenceServices.
///
/// Reads the status view the filter answers on its statusPath and prints kubectl's
/// columns (NAME, URL, READY, PREV, LATEST, PREVROLLEDOUTREVISION, LATESTREADYREVISION),
/// where PREV and LATEST are the shares in effect now, then what only the filter knows:
/// SPLIT (every revision's share now), EJECTED (revisions out of rotation for failing
/// traffic) and ROLLEDBACK (an automatic rollback in force). Each gateway worker answers
/// from its own view, refreshed every 100 ms.
#[derive(Args)]
#[command(after_help = STATUS_EXAMPLES)]
struct StatusArgs {
    /// The status view's URL (plain HTTP).
    #[arg(value_name = "URL")]
    url: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: status::Format,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    timeout: f64,
}

const STATUS_EXAMPLES: &str = "Examples:
  # The status view of a gateway, through a port-forward
  kubectl -n istio-system port-forward svc/istio-ingressgateway 8080:80 &
  canary-router status http://127.0.0.1:8080/canary-router/status

  # The view itself, as JSON
  canary-router status -o json http://127.0.0.1:8080/canary-router/status";

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Render(a) => render::run(&render::Options {
            input: a.input,
            namespace: a.namespace,
            name: a.name,
            image: a.image,
            sha256: a.sha256,
            image_from: a.image_from,
            selector: a.selector,
            gateway: a.gateway,
            policies: a.policy,
            config: a.config,
            local_gateway: a.local_gateway,
            output: a.output,
        }),
        Command::Check(a) => check::run(&check::Options {
            files: a.files,
            quiet: a.quiet,
            verbose: a.verbose,
        }),
        Command::Status(a) => match Duration::try_from_secs_f64(a.timeout) {
            Ok(timeout) => status::run(&status::Options {
                url: a.url,
                output: a.output,
                timeout,
            }),
            Err(e) => Err(Error::Input(format!("--timeout: {e}"))),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Refused) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
