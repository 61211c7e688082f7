//! `bans list` and `bans lift`: the mail servers' login guard as the operator sees it, on the
//! same PostgreSQL. A lift reaches every pod within a moment (the table's trigger notifies
//! them).

use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use mail_provision::bans::{self, Target};
use sqlx::postgres::PgPoolOptions;

#[derive(clap::Args)]
pub struct Args {
    /// PostgreSQL URL, e.g. postgres://user@host:5432/mail.
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The bans in force, and the accounts with failed logins in the window.
    List {
        /// Also the ended bans still remembered (a repeat offender's next ban is longer).
        #[arg(long)]
        all: bool,
        /// The mail servers' counting window, in seconds (`--guard-window`).
        #[arg(long, default_value_t = 600)]
        window: u64,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Lift the bans of an address or network (`192.0.2.7`, `2001:db8::/64`), or forget the
    /// failed logins of an account (`alice@example.com`) so it is no longer slowed.
    Lift { target: String },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let Some(url) = &args.database_url else {
        anyhow::bail!("give --database-url or DATABASE_URL");
    };
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .context("connecting to PostgreSQL")?;
    match args.command {
        Command::List { all, window, json } => {
            let listed = bans::list(&pool, all).await.context("listing bans")?;
            let accounts = bans::accounts(&pool, Duration::from_secs(window), 100)
                .await
                .context("listing accounts")?;
            if json {
                let body = serde_json::json!({ "bans": listed, "accounts": accounts });
                println!("{body}");
                return Ok(());
            }
            println!(
                "{:<42} {:>9} {:>7}  {:<20}  REASON",
                "NETWORK", "REMAINING", "REPEATS", "UNTIL"
            );
            for ban in &listed {
                println!(
                    "{:<42} {:>8}s {:>7}  {:<20}  {}",
                    ban.network,
                    ban.remaining_seconds.ceil() as u64,
                    ban.repeats,
                    ban.until.format("%Y-%m-%dT%H:%M:%SZ"),
                    ban.reason
                );
            }
            if !accounts.is_empty() {
                println!();
                println!("{:<42} {:>9}", "ACCOUNT", "FAILURES");
                for account in &accounts {
                    println!("{:<42} {:>9}", account.account, account.failures);
                }
            }
        }
        Command::Lift { target } => {
            let target = Target::parse(&target).map_err(anyhow::Error::msg)?;
            let lifted = bans::lift(&pool, &target).await.context("lifting")?;
            println!(
                "lifted {} ban(s), forgot {} failed login(s)",
                lifted.bans, lifted.failures
            );
        }
    }
    Ok(())
}
