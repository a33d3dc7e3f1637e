//! Operator commands for registration invites and account suspension. They work directly on the configured
//! database (like `migrate`), so they need no running server. Codes are printed only by `invites create`.

use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use flatline_core::ids::Aci;
use flatline_core::invites::{Invite, InviteFilter, InviteId, InviteOwner, InviteState, Invites};
use flatline_core::manifest::Descriptor;
use flatline_core::ratelimit::RateLimiters;
use flatline_core::store::Store;
use flatline_core::time::{Clock, Timestamp};

use crate::config::Settings;
use crate::system::{OsRandom, SystemClock};

/// `invites` subcommands.
#[derive(Debug, Subcommand)]
pub enum InvitesCommand {
    /// Create an operator invite (outside every quota) and print its code and link — the only time they are shown.
    Create {
        /// Uses allowed.
        #[arg(long, default_value_t = 1)]
        max_uses: u32,
        /// Days until it expires (default: `invites.default_expiry_days`; 0: never).
        #[arg(long)]
        expires_days: Option<u32>,
        /// A note for operators (at most 200 characters).
        #[arg(long)]
        note: Option<String>,
    },
    /// List invites (never their codes), newest first.
    List {
        /// Only invites owned by this account (ACI).
        #[arg(long, conflicts_with = "operator")]
        owner: Option<String>,
        /// Only operator invites.
        #[arg(long)]
        operator: bool,
        /// Only invites in this state: active, exhausted, expired, revoked, owner_suspended.
        #[arg(long)]
        state: Option<String>,
    },
    /// Print the invite tree below an account (or below the operator): inviter → invitee edges.
    Tree {
        /// The root account (ACI).
        #[arg(conflicts_with = "operator", required_unless_present = "operator")]
        aci: Option<String>,
        /// Start at the operator: every account admitted by an operator invite, and below.
        #[arg(long)]
        operator: bool,
    },
    /// Revoke an invite (soft; reversible with `unrevoke`).
    Revoke {
        /// Invite id.
        id: String,
    },
    /// Undo a revocation.
    Unrevoke {
        /// Invite id.
        id: String,
    },
    /// Revoke every invite of an account.
    RevokeAll {
        /// The account (ACI).
        aci: String,
    },
}

/// `accounts` subcommands.
#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Suspend an account: its sends to others are refused (403 `account_suspended`), its sockets are closed with
    /// 4401 on every running server (PostgreSQL; with SQLite open sockets stay, their sends refused), its invites stop working
    /// and it cannot create new ones.
    Suspend {
        /// The account (ACI).
        aci: String,
    },
    /// Lift a suspension.
    Unsuspend {
        /// The account (ACI).
        aci: String,
    },
    /// The flood state of an account's contact invites (tab-separated: invite id, label, uses/max, paused until,
    /// flood detected at, burst since, quarantined grants; times in Unix seconds, `-` when unset), then its grants
    /// by state.
    Floods {
        /// The account (ACI).
        aci: String,
    },
}

struct Ctx {
    store: Arc<dyn Store>,
    invites: Invites,
    now: Timestamp,
}

async fn open(config: &Settings) -> Result<Ctx, String> {
    let store = crate::store::open(&config.database)
        .await
        .map_err(|e| e.to_string())?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let limiters = RateLimiters::new(store.clone(), clock.clone(), config.limits.clone());
    let invites = Invites::new(
        store.clone(),
        clock.clone(),
        Arc::new(OsRandom),
        limiters,
        config.invites.policy.clone(),
    );
    Ok(Ctx {
        store,
        invites,
        now: clock.now(),
    })
}

fn parse_aci(s: &str) -> Result<Aci, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not an ACI (a hyphenated UUID)"))
}

fn parse_id(s: &str) -> Result<InviteId, String> {
    uuid::Uuid::parse_str(s)
        .map(InviteId)
        .map_err(|_| format!("`{s}` is not an invite id"))
}

fn parse_state(s: &str) -> Result<InviteState, String> {
    [
        InviteState::Active,
        InviteState::Exhausted,
        InviteState::Expired,
        InviteState::Revoked,
        InviteState::OwnerSuspended,
    ]
    .into_iter()
    .find(|st| st.as_str() == s)
    .ok_or_else(|| {
        format!("unknown state `{s}`; use active, exhausted, expired, revoked or owner_suspended")
    })
}

/// UTC `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, proleptic Gregorian).
pub fn utc(t: Timestamp) -> String {
    let secs = t.as_secs();
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn owner_label(o: InviteOwner) -> String {
    match o {
        InviteOwner::Operator => "operator".into(),
        InviteOwner::Account(a) => a.to_string(),
    }
}

/// The descriptor when the instance keys exist (never creates them here).
fn descriptor(config: &Settings) -> Option<Descriptor> {
    let i = &config.instance;
    if !(i.signing_key_file.exists()
        && i.sealed_sender_key_file.exists()
        && i.zk_params_file.exists())
    {
        return None;
    }
    let keys = crate::trust::load_keys(config, &OsRandom).ok()?;
    Some(Descriptor {
        manifest_url: config.instance.manifest_url.clone(),
        fingerprint: keys.signing.fingerprint(),
    })
}

fn line(i: &Invite, state: InviteState) -> String {
    format!(
        "{}  owner={}  state={}  uses={}/{}  pending={}  created={}  expires={}{}",
        i.id,
        owner_label(i.owner),
        state.as_str(),
        i.uses,
        i.max_uses,
        i.pending,
        utc(i.created_at),
        i.expires_at.map_or_else(|| "never".into(), utc),
        i.note
            .as_deref()
            .map(|n| format!("  note={n:?}"))
            .unwrap_or_default()
    )
}

/// Runs an `invites` subcommand; returns the exit code.
pub async fn invites(config: &Settings, cmd: InvitesCommand) -> i32 {
    match run_invites(config, cmd).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("flatline-server: {e}");
            1
        }
    }
}

async fn run_invites(config: &Settings, cmd: InvitesCommand) -> Result<(), String> {
    let ctx = open(config).await?;
    let store = &ctx.store;
    match cmd {
        InvitesCommand::Create {
            max_uses,
            expires_days,
            note,
        } => {
            // `--expires-days 0`: no expiry; unset: the configured default.
            let expires_in = match expires_days {
                Some(0) => None,
                Some(days) => Some(Duration::from_secs(u64::from(days) * 86_400)),
                None => Some(config.invites.policy.default_expiry),
            };
            let (invite, code) = ctx
                .invites
                .create_operator(max_uses, expires_in, note)
                .await
                .map_err(|e| e.to_string())?;
            let link = crate::http::invites::invite_link(
                descriptor(config).as_ref(),
                &config.server.public_url,
                &code,
            );
            println!("id:      {}", invite.id);
            println!("code:    {}", code.display());
            println!("link:    {link}");
            println!(
                "uses:    {}, expires: {}",
                invite.max_uses,
                invite.expires_at.map_or_else(|| "never".into(), utc)
            );
            eprintln!("the code is shown only now; only its hash is stored");
        }
        InvitesCommand::List {
            owner,
            operator,
            state,
        } => {
            let owner = match (owner, operator) {
                (Some(a), _) => Some(InviteOwner::Account(parse_aci(&a)?)),
                (None, true) => Some(InviteOwner::Operator),
                (None, false) => None,
            };
            let state = state.as_deref().map(parse_state).transpose()?;
            let list = store
                .list_invites(&InviteFilter { owner, state }, ctx.now)
                .await
                .map_err(|e| e.to_string())?;
            for i in &list {
                let st = ctx
                    .invites
                    .state_of(i, ctx.now)
                    .await
                    .map_err(|e| e.to_string())?;
                println!("{}", line(i, st));
            }
            eprintln!("{} invite(s)", list.len());
        }
        InvitesCommand::Tree { aci, operator: _ } => {
            let root = match aci {
                Some(a) => InviteOwner::Account(parse_aci(&a)?),
                None => InviteOwner::Operator,
            };
            println!("{}", owner_label(root));
            if let InviteOwner::Account(a) = root
                && let Some(r) = store.redemption_of(a).await.map_err(|e| e.to_string())?
            {
                println!(
                    "  (admitted by {} via invite {} at {})",
                    owner_label(r.inviter),
                    r.invite,
                    utc(r.at)
                );
            }
            let edges = ctx.invites.tree(root).await.map_err(|e| e.to_string())?;
            for e in &edges {
                println!(
                    "{}{} → {}  (invite {}, {})",
                    "  ".repeat(e.depth),
                    owner_label(e.inviter),
                    e.invitee,
                    e.invite,
                    utc(e.at)
                );
            }
            eprintln!("{} account(s) below {}", edges.len(), owner_label(root));
        }
        InvitesCommand::Revoke { id } => {
            let id = parse_id(&id)?;
            let invite = store
                .invite(id, ctx.now)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no such invite")?;
            if invite.revoked_at.is_some() {
                println!("{id} was already revoked");
            } else {
                store
                    .set_revoked(id, Some(ctx.now))
                    .await
                    .map_err(|e| e.to_string())?;
                println!("revoked {id}");
            }
        }
        InvitesCommand::Unrevoke { id } => {
            let id = parse_id(&id)?;
            if !store
                .set_revoked(id, None)
                .await
                .map_err(|e| e.to_string())?
            {
                return Err("no such invite".into());
            }
            println!("unrevoked {id}");
        }
        InvitesCommand::RevokeAll { aci } => {
            let aci = parse_aci(&aci)?;
            let n = store
                .revoke_all_of(aci, ctx.now)
                .await
                .map_err(|e| e.to_string())?;
            println!("revoked {n} invite(s) of {aci}");
        }
    }
    Ok(())
}

async fn floods(ctx: &Ctx, raw: &str) -> Result<(), String> {
    let aci = parse_aci(raw)?;
    let secs = |t: Option<Timestamp>| t.map_or_else(|| "-".to_owned(), |t| t.as_secs().to_string());
    for invite in ctx
        .store
        .contact_invites(aci)
        .await
        .map_err(|e| e.to_string())?
    {
        println!(
            "{}\t{}\t{}/{}\t{}\t{}\t{}\t{}",
            invite.id,
            invite.label.as_deref().unwrap_or("-"),
            invite.uses,
            invite.max_uses,
            secs(invite.paused_until),
            secs(invite.flood.map(|f| f.detected_at)),
            secs(invite.flood.map(|f| f.since)),
            invite.flood.map_or(0, |f| f.quarantined),
        );
    }
    let grants = ctx
        .store
        .contact_grants(aci)
        .await
        .map_err(|e| e.to_string())?;
    let mut by_state = std::collections::BTreeMap::<&str, usize>::new();
    for g in &grants {
        *by_state.entry(g.state.as_str()).or_default() += 1;
    }
    let summary: Vec<String> = by_state.iter().map(|(s, n)| format!("{s} {n}")).collect();
    println!(
        "grants: {}",
        if summary.is_empty() {
            "none".to_owned()
        } else {
            summary.join(", ")
        }
    );
    Ok(())
}

/// Runs an `accounts` subcommand; returns the exit code.
pub async fn accounts(config: &Settings, cmd: AccountsCommand) -> i32 {
    let run = async {
        let ctx = open(config).await?;
        let (raw, suspend) = match &cmd {
            AccountsCommand::Suspend { aci } => (aci, true),
            AccountsCommand::Unsuspend { aci } => (aci, false),
            AccountsCommand::Floods { aci } => return floods(&ctx, aci).await,
        };
        let aci = parse_aci(raw)?;
        if ctx
            .store
            .account(aci)
            .await
            .map_err(|e| e.to_string())?
            .is_none()
        {
            return Err(format!("no account {aci}"));
        }
        ctx.store
            .set_suspended(aci, suspend, ctx.now)
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "{} {aci}",
            if suspend { "suspended" } else { "unsuspended" }
        );
        if suspend {
            let event = crate::chat::Event::Disconnect { aci, device: None };
            match crate::chat::bus::announce(config.database.url(), &event).await {
                Ok(true) => println!("its sockets on running servers were told to close (4401)"),
                Ok(false) => println!(
                    "SQLite: a running server keeps the account's open sockets until they reconnect; its sends \
                     are refused already"
                ),
                Err(e) => eprintln!(
                    "flatline-server: the running servers could not be told ({e}); its sends are refused already"
                ),
            }
        }
        Ok::<(), String>(())
    };
    match run.await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("flatline-server: {e}");
            1
        }
    }
}
