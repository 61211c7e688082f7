//! Keeps each process's [`BanView`](super::view::BanView) current: one `LISTEN login_bans`
//! connection (the table's trigger notifies on every ban and lift, whichever pod or operator
//! made it), a periodic reload as a safety net, and the cleanup of old rows.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use mail_provision::bans::CHANNEL;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::Inner;

/// Cleanup runs every this many periodic reloads.
const CLEAN_EVERY: u32 = 6;

/// Opens the LISTEN connection; `None` (logged) when it cannot.
pub(super) async fn listen(db: &PgPool) -> Option<PgListener> {
    let attempt = async {
        let mut listener = PgListener::connect_with(db).await?;
        listener.listen(CHANNEL).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    match attempt.await {
        Ok(listener) => Some(listener),
        Err(err) => {
            warn!(%err, "login guard: cannot LISTEN for bans; reloading periodically");
            None
        }
    }
}

/// Starts the tasks; they end once every [`Guard`](super::Guard) of the process is dropped.
pub(super) fn spawn(inner: &Arc<Inner>, listener: Option<PgListener>) {
    let changed = Arc::new(Notify::new());
    tokio::spawn(receive(
        Arc::downgrade(inner),
        inner.db.clone(),
        listener,
        changed.clone(),
    ));
    tokio::spawn(reload_loop(Arc::downgrade(inner), changed));
}

/// Turns notifications into wake-ups of the reload loop. A task of its own, so that no
/// receive is ever cancelled half-way by the reload loop's timer.
async fn receive(
    weak: Weak<Inner>,
    db: PgPool,
    mut listener: Option<PgListener>,
    changed: Arc<Notify>,
) {
    while weak.strong_count() > 0 {
        // Shut down (the process is closing its pool): nothing left to listen for.
        if db.is_closed() {
            return;
        }
        let Some(l) = listener.as_mut() else {
            tokio::time::sleep(Duration::from_secs(5)).await;
            listener = listen(&db).await;
            // Whatever happened while not listening: reload.
            changed.notify_one();
            continue;
        };
        match l.try_recv().await {
            Ok(Some(notification)) => {
                // A new or changed ban: entered as it is, no reload (a flood of bans from a
                // botnet must not make every pod reload every ban for each one).
                if let Some((network, left)) = parse_ban(notification.payload())
                    && let Some(inner) = weak.upgrade()
                {
                    inner.view.insert(network, Instant::now() + left);
                    continue;
                }
                debug!("login guard: bans lifted; reloading");
            }
            // Reconnected (and listening again): notifications in between were lost.
            Ok(None) => debug!("login guard: LISTEN connection lost; reloading"),
            Err(sqlx::Error::PoolClosed) => return,
            Err(err) => {
                warn!(%err, "login guard: LISTEN failed; reconnecting");
                listener = None;
            }
        }
        changed.notify_one();
    }
}

/// A ban's notification: `<network> <seconds left>`; `None` for anything else (a lift).
fn parse_ban(payload: &str) -> Option<(String, Duration)> {
    let (network, seconds) = payload.split_once(' ')?;
    let seconds: f64 = seconds.parse().ok()?;
    if network.is_empty() || !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    Some((
        network.to_string(),
        Duration::from_secs_f64(seconds.min(1e9)),
    ))
}

/// Reloads on every wake-up and on a timer; cleans up now and then.
async fn reload_loop(weak: Weak<Inner>, changed: Arc<Notify>) {
    let refresh = match weak.upgrade() {
        Some(inner) => inner.settings.refresh.max(Duration::from_millis(100)),
        None => return,
    };
    let mut ticks = tokio::time::interval(refresh);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut reloads = 0u32;
    loop {
        let clean = tokio::select! {
            _ = changed.notified() => false,
            _ = ticks.tick() => {
                reloads = reloads.wrapping_add(1);
                reloads.is_multiple_of(CLEAN_EVERY)
            }
        };
        let Some(inner) = weak.upgrade() else {
            return;
        };
        reload(&inner).await;
        if clean {
            inner.pace.prune(Instant::now());
            match super::shared::clean_up(&inner.db, &inner.settings).await {
                Ok(0) => {}
                Ok(rows) => debug!(rows, "login guard: old rows deleted"),
                Err(err) => warn!(%err, "login guard: cleanup failed; retried later"),
            }
        }
    }
}

/// Loads the bans in force into the view; on error the old view stays (its bans still end
/// by their time).
pub(super) async fn reload(inner: &Inner) {
    match super::shared::active_bans(&inner.db).await {
        Ok(bans) => inner.view.replace(bans, Instant::now()),
        Err(err) => warn!(%err, "login guard: cannot load bans; keeping the last view"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_payloads() {
        assert_eq!(
            parse_ban("192.0.2.7/32 899.5"),
            Some(("192.0.2.7/32".into(), Duration::from_millis(899_500)))
        );
        assert_eq!(
            parse_ban("2001:db8::/64 0"),
            Some(("2001:db8::/64".into(), Duration::ZERO))
        );
        for other in ["", "192.0.2.7/32", "192.0.2.7/32 x", " 5", "a -1", "a NaN"] {
            assert_eq!(parse_ban(other), None, "{other:?}");
        }
    }
}
