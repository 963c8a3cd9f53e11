//! The `rds-csi` binary: arguments → config → logging → server; prints the
//! error chain and exits non-zero on failure (2 for usage errors).

use std::process::ExitCode;
use std::sync::Arc;

use log::info;

use rds_csi::cli::{self, Command, Sub};
use rds_csi::config::ServeConfig;
use rds_csi::controller::RdsHealth;
use rds_csi::csi::controller::ControllerService;
use rds_csi::csi::identity::IdentityService;
use rds_csi::csi::server::Dispatcher;
use rds_csi::csi::Services;
use rds_csi::health::Readiness;
use rds_csi::host::sys::TerminationSignals;
use rds_csi::metrics;
use rds_csi::node::NodeService;
use rds_csi::rds;
use rds_csi::{error_chain, version};

/// The start-up orphan clean-up may delay serving by about this much at most.
const ORPHAN_CLEAN_UP_BUDGET: std::time::Duration = std::time::Duration::from_secs(30);

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os().skip(1), &|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    match command {
        Command::Help(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("rds-csi {}", version());
            ExitCode::SUCCESS
        }
        Command::Run(Sub::Serve, values) => match ServeConfig::from_values(&values) {
            Ok(cfg) if cfg.check_only => {
                println!("configuration is valid:\n{cfg:#?}");
                ExitCode::SUCCESS
            }
            Ok(cfg) => run(serve(cfg)),
            Err(e) => usage_error(&e),
        },
        Command::Ctl(args) => match rds_csi::ops::ctl::run(args, &|k| std::env::var(k).ok()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rds-csi ctl: {e}");
                ExitCode::from(e.exit_code())
            }
        },
        Command::Run(Sub::Doctor, values) => {
            // Only problems are logged; the report itself goes to stdout.
            let level = rds_csi::config::log_level(&values).unwrap_or(log::LevelFilter::Warn);
            init_logging(level.min(log::LevelFilter::Warn));
            match rds_csi::ops::doctor::run(&values) {
                Ok(checks) if rds_csi::ops::doctor::report(&checks) => ExitCode::SUCCESS,
                Ok(_) => ExitCode::FAILURE,
                Err(e) => usage_error(&e),
            }
        }
    }
}

fn usage_error(e: &dyn std::error::Error) -> ExitCode {
    eprintln!("rds-csi: {e}");
    ExitCode::from(2)
}

fn run(result: Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{}", error_chain(e.as_ref()));
            eprintln!("rds-csi: {}", error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: log::LevelFilter) {
    let mut builder = env_logger::Builder::new();
    // Our own debug lines are the useful ones; the HTTP and TLS libraries'
    // join in only at trace.
    let deps = if level >= log::LevelFilter::Trace {
        level
    } else {
        level.min(log::LevelFilter::Info)
    };
    builder
        .filter_level(deps)
        .filter_module("rds_csi", level)
        .format_timestamp_millis();
    // RUST_LOG can still refine levels per module when debugging.
    if let Ok(filters) = std::env::var("RUST_LOG") {
        builder.parse_filters(&filters);
    }
    builder.init();
}

fn serve(cfg: ServeConfig) -> Result<(), Box<dyn std::error::Error>> {
    // Before any thread exists, so that every thread inherits the mask.
    let signals = TerminationSignals::block()?;
    init_logging(cfg.log_level);
    info!(
        "rds-csi {} starting: controller={} node={} driver={} endpoint={}",
        version(),
        cfg.controller,
        cfg.node,
        cfg.driver_name,
        cfg.endpoint
    );
    let dispatcher = Dispatcher::new(cfg.max_in_flight);
    if let Some(addr) = cfg.metrics_address {
        metrics::serve(addr)?;
        let d = dispatcher.clone();
        metrics::register_gauge_fn("rds_csi_rpc_in_flight", move || {
            vec![(Vec::new(), d.in_flight() as f64)]
        });
    }
    let mut readiness: Vec<Arc<dyn Readiness>> = Vec::new();
    let mut services = Services::new(&dispatcher);
    // The node plugin cleans up its orphaned connections before serving.
    let node = cfg.node_settings.clone().map(|s| Arc::new(NodeService::new(s)));
    if let Some(node) = &node {
        readiness.push(node.readiness());
        node.clean_up_orphans(ORPHAN_CLEAN_UP_BUDGET);
        if cfg.metrics_address.is_some() {
            node.register_metrics();
        }
    }
    if let Some(cc) = cfg.controller_config.clone() {
        let rds = rds::Client::new(cc.rds)?;
        let settings = cc.settings;
        let pool = settings.pool.clone();
        let controller = ControllerService::new(rds.clone(), settings);
        readiness.push(RdsHealth::start(
            rds,
            pool,
            cc.check_interval,
            Some(controller.pool_fs_cache()),
        ));
        services.add_controller(Arc::new(controller));
    }
    if let Some(node) = node {
        services.add_node(node);
    }
    let identity = Arc::new(IdentityService::new(
        cfg.driver_name.clone(),
        cfg.controller,
        readiness,
    ));
    services.add_identity(identity);
    let running = services.start(&cfg.endpoint)?;
    let signal = signals.wait()?;
    info!("{signal} received");
    running.shutdown(cfg.shutdown_grace);
    Ok(())
}
