//! Cluster-wide ownership, as the core's registry asks for it ([`crate::stream::ports::Ownership`]).
//!
//! - **Claims.** A publish asks every remote member of the key's group ([`super::stream_group`]) for its claim
//!   ([`Request::Claim`]); a live one elsewhere refuses the publish. An owner that does not answer (its node is
//!   still a member: stalled, or behind a partition not yet declared) but pushed a live HLS position within its
//!   lease ([`super::claims`]) makes the publish wait: for its answer (a live owner refuses it) or for the lease
//!   to run out; an owner whose node left or died holds none. After a local claim, a racing claim becomes visible within
//!   `cluster.claim_settle_ms`; the lower [`ClaimRank`] wins (epoch, Unix ms, node name).
//! - **Relays.** `OwnerSource` names the live owner's export actor; starting it spawns a [`RelaySink`].
//! - **HLS of streams owned elsewhere.** The owner of each key is learnt once and kept (with the key's group as
//!   it was then); it is asked again only when the group changes (an owner joined, left or was replaced), so a
//!   playlist poll makes no cluster call once the owner is known. Each node counts the HLS polls it answers for
//!   such streams in its own `strom_viewers{protocol="hls"}` ([`PollMeter`]).

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ractor::{Actor, ActorCell, ActorId, ActorRef};
use tracing::{error, info, warn};

use super::claims::ClaimRank;
use super::export::{ExportArgs, StreamExport};
use super::hls::{OwnerHls, StaleHls};
use super::relay::{RelayArgs, RelaySink};
use super::wire::{Request, Response};
use super::{remote_members, stream_group, ClusterHandle, RemoteMsg};
use bytes::Bytes;

use crate::formats::playlist::{next_part_in, resumable_window, skip_of, ListedSegment};
use crate::formats::StreamKey;
use crate::metrics::Metrics;
use crate::stream::hls_viewers::PollMeter;
use crate::stream::ports::{BoxFuture, Claim as LocalClaim, Ownership, RelaySource, RemoteHls, Resume, Takeover};
use crate::stream::segmenter::Blocking;
use crate::stream::{Publisher, StreamHandle, ViewerCounts};

/// How long a claim query may take (a hung node is declared down by the heartbeat anyway).
const CLAIM_TIMEOUT: Duration = Duration::from_secs(1);

/// Known owners (and HLS meters) kept before those of streams that are gone are forgotten.
const MAX_KNOWN: usize = 4096;

/// The cluster's [`Ownership`] (see the module docs).
pub struct ClusterOwnership {
    cluster: ClusterHandle,
    metrics: Arc<Metrics>,
    /// The owner of each stream this node serves HLS of without owning it.
    owners: DashMap<StreamKey, KnownOwner>,
    /// HLS polls this node answered for streams other nodes own.
    meters: DashMap<StreamKey, PollMeter>,
    /// Target duration for those meters' windows.
    target_secs: u64,
}

/// A stream's owner as this node last learnt it.
#[derive(Clone)]
struct KnownOwner {
    /// The owner's export actor.
    actor: ActorRef<RemoteMsg>,
    /// When its claim started (Unix ms): which pushed playlist is its.
    since_ms: u64,
    /// The stream's group (its members' ids, sorted) when the owner was learnt.
    group: Vec<ActorId>,
}

/// Whose HLS of a remote stream this node serves.
enum HlsOwner {
    /// This owner's (what it pushed, and its segments).
    Known(KnownOwner),
    /// The stream's group has members but none answered its claim in time: the last pushed state, as pushed.
    Silent,
    /// No node exports the stream (its owner's node died or drained): the last pushed state with its open
    /// segment closed, until a publisher brings the stream back.
    Gone,
}

/// A claim as a remote owner reported it.
#[derive(Debug, Clone)]
struct Claim {
    node: String,
    live: bool,
    since_ms: u64,
    epoch: u64,
}

impl Claim {
    fn rank(&self) -> ClaimRank {
        ClaimRank { epoch: self.epoch, since_ms: self.since_ms, node: self.node.clone() }
    }
}

/// An owner heard from within this long is not gone, whatever groups this node sees: a live LL-HLS owner pushes
/// at every part (0.2 s by default), and a node that has just joined learns the stream groups later than the
/// pushes (its first answers would otherwise close a live owner's open segment for its players).
const PUSHED_RECENTLY: Duration = Duration::from_millis(1500);

/// Whether no node exports `key` and no owner of it was heard from lately: its open segment can be closed.
fn owner_gone(cluster: &ClusterHandle, key: &StreamKey) -> bool {
    remote_members(&stream_group(key)).is_empty() && !cluster.pushed_within(key, PUSHED_RECENTLY)
}

/// How long a publish waits at most for an owner that does not answer, beyond its lease.
const LEASE_WAIT_SLACK: Duration = Duration::from_secs(2);

impl ClusterOwnership {
    /// Ownership through `cluster`; `target_secs`: the HLS segment duration (for the viewer estimate).
    pub fn new(cluster: ClusterHandle, metrics: Arc<Metrics>, target_secs: u64) -> Arc<ClusterOwnership> {
        Arc::new(ClusterOwnership { cluster, metrics, owners: DashMap::new(), meters: DashMap::new(), target_secs })
    }

    /// The node whose HLS of `key` this node serves: a live owner, else one whose stream ended (it still serves
    /// its final playlist).
    async fn hls_owner(&self, key: &StreamKey) -> HlsOwner {
        let mut group: Vec<ActorId> = remote_members(&stream_group(key)).iter().map(|a| a.get_id()).collect();
        group.sort();
        if group.is_empty() {
            self.owners.remove(key);
            return HlsOwner::Gone;
        }
        let cached = self.owners.get(key).map(|k| k.clone());
        // The owner learnt before is still a member: when the group only lost members (another node's copy of a
        // member left with that node, or an ended claim went), nothing new can outrank it, so it is not asked
        // again. Asking would cost a claim round trip just when a node dies, and an answer late past the claim
        // timeout would serve the stream as ownerless.
        let known_in_group = cached.filter(|k| group.contains(&k.actor.get_id()));
        if let Some(mut known) = known_in_group.clone().filter(|k| group.iter().all(|m| k.group.contains(m))) {
            if known.group != group {
                known.group = group;
                self.owners.insert(key.clone(), known.clone());
            }
            return HlsOwner::Known(known);
        }
        // Prefer a live owner; an ended stream's owner still serves its final playlist (ENDLIST).
        let owners = claims(&self.cluster, key).await;
        let Some((actor, claim)) = owners.iter().find(|(_, c)| c.live).or(owners.first()).cloned() else {
            // Nobody answered in time (a busy moment, or a member behind a partition): the owner known before
            // goes on if it is still a member; else the stream's last pushed state, as pushed.
            return match known_in_group {
                Some(known) => HlsOwner::Known(known),
                None => HlsOwner::Silent,
            };
        };
        let known = KnownOwner { actor, since_ms: claim.since_ms, group };
        if self.owners.len() >= MAX_KNOWN {
            self.owners.retain(|k, _| !remote_members(&stream_group(k)).is_empty());
        }
        self.owners.insert(key.clone(), known.clone());
        HlsOwner::Known(known)
    }

    /// The HLS poll meter of `key` here.
    fn meter(&self, key: &StreamKey) -> PollMeter {
        if let Some(m) = self.meters.get(key) {
            return m.clone();
        }
        if self.meters.len() >= 64 {
            // Meters of streams nobody polls here any more leave (their estimate is back to zero).
            self.meters.retain(|_, m| m.viewers() > 0);
        }
        self.meters.entry(key.clone()).or_insert_with(|| PollMeter::new(self.target_secs, self.metrics.clone())).clone()
    }
}

/// Every remote owner of `key` that answers, with its claim, in group order (asked concurrently). Their epochs
/// are noted: a claim made here later ranks above them.
async fn claims(cluster: &ClusterHandle, key: &StreamKey) -> Vec<(ActorRef<RemoteMsg>, Claim)> {
    claims_and_silent(cluster, key).await.0
}

/// [`claims`], and how many members of the stream's group did not answer within the claim timeout (stalled, or
/// behind a partition the heartbeat has not declared yet). A node that left or died is no member any more.
async fn claims_and_silent(cluster: &ClusterHandle, key: &StreamKey) -> (Vec<(ActorRef<RemoteMsg>, Claim)>, usize) {
    let asks = remote_members(&stream_group(key)).into_iter().map(|owner| async move {
        match super::call(&owner, &Request::Claim, CLAIM_TIMEOUT).await {
            Some(Response::Claim { node, live, since_ms, epoch }) => {
                Some((owner, Claim { node, live, since_ms, epoch }))
            }
            _ => None,
        }
    });
    let answers = futures_util::future::join_all(asks).await;
    let asked = answers.len();
    let out: Vec<_> = answers.into_iter().flatten().collect();
    for (_, c) in &out {
        cluster.note_epoch(key, c.epoch);
    }
    let silent = asked - out.len();
    (out, silent)
}

/// Remote owners of `key` with a live publisher, the winning claim first.
async fn live_owners(cluster: &ClusterHandle, key: &StreamKey) -> Vec<(ActorRef<RemoteMsg>, Claim)> {
    let mut live: Vec<_> = claims(cluster, key).await.into_iter().filter(|(_, c)| c.live).collect();
    live.sort_by_key(|(_, c)| c.rank());
    live
}

impl Ownership for ClusterOwnership {
    fn live_elsewhere<'a>(&'a self, key: &'a StreamKey) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            let started = tokio::time::Instant::now();
            let limit = self.cluster.owner_lease() + LEASE_WAIT_SLACK;
            let mut waited = false;
            loop {
                let (claims, silent) = claims_and_silent(&self.cluster, key).await;
                if let Some(owner) = claims.iter().filter(|(_, c)| c.live).map(|(_, c)| c).min_by_key(|c| c.rank()) {
                    info!(stream = %key, owner = %owner.node, "publish refused: another node has a live publisher");
                    self.cluster.metrics.ownership_conflicts.with_label_values(&["refused"]).inc();
                    return Some(owner.node.clone());
                }
                // An owner that does not answer (stalled, or behind a partition) but pushed a live position within
                // its lease still owns the stream: wait for its answer or for the lease to run out. An owner whose
                // node left the cluster (drained, or its session closed when it died) holds no lease: its stream
                // can only continue here.
                let answered: Vec<u64> = claims.iter().map(|(_, c)| c.since_ms).collect();
                let remaining = if silent == 0 { None } else { self.cluster.lease_remaining(key, &answered) };
                let Some(remaining) = remaining else {
                    if waited {
                        info!(stream = %key, waited = ?started.elapsed(), "the silent owner's lease ran out: publishing here");
                    }
                    return None;
                };
                if started.elapsed() >= limit {
                    warn!(stream = %key, "publish refused: an owner that does not answer keeps renewing its lease");
                    self.cluster.metrics.ownership_conflicts.with_label_values(&["refused"]).inc();
                    return Some("an owner that does not answer".into());
                }
                if !waited {
                    info!(stream = %key, lease_left = ?remaining, "an owner that does not answer holds the stream's lease: the publish waits");
                    waited = true;
                }
                let notify = self.cluster.hls_waiter(key);
                let _ = tokio::time::timeout(remaining.min(Duration::from_millis(500)), notify.notified()).await;
            }
        })
    }

    fn older_claim<'a>(&'a self, key: &'a StreamKey, claim: LocalClaim) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(self.cluster.config.claim_settle_ms)).await;
            let mine = ClaimRank { epoch: claim.epoch, since_ms: claim.since_ms, node: self.cluster.node.clone() };
            let winner = live_owners(&self.cluster, key).await.into_iter().map(|(_, c)| c).find(|c| c.rank() < mine)?;
            info!(stream = %key, winner = %winner.node, "publish lost a race for the key to another node");
            self.cluster.metrics.ownership_conflicts.with_label_values(&["lost_race"]).inc();
            Some(winner.node)
        })
    }

    fn takeover(&self, key: &StreamKey, grace: Duration) -> Takeover {
        let resume = self.cluster.hls_resume(key, grace).map(|(next_msn, discontinuity, timeline_ms)| {
            // The previous owner's playlist as other nodes serve it now (its open segment closed): listed first.
            let window = self
                .cluster
                .last_playlist(key, grace, true)
                .map(|t| resumable_window(&String::from_utf8_lossy(&t), next_msn, discontinuity))
                .unwrap_or_default();
            // Listed here, the window's files must be served here: copy them while the previous owner is there.
            self.cluster.copy_earlier(key, window_files(&window));
            Resume { next_msn, discontinuity, window, timeline_ms }
        });
        Takeover { epoch: self.cluster.next_epoch(key), resume }
    }

    fn export(&self, handle: StreamHandle) -> BoxFuture<'_, Option<ActorCell>> {
        Box::pin(async move {
            let key = handle.key().clone();
            let claim = handle.claim();
            let args = ExportArgs { handle, cluster: self.cluster.clone(), metrics: self.metrics.clone(), claim };
            match Actor::spawn(None, StreamExport, args).await {
                Ok((a, _)) => Some(a.get_cell()),
                Err(e) => {
                    error!(stream = %key, error = %e, "cannot export the stream to the cluster");
                    None
                }
            }
        })
    }

    fn relay_source<'a>(&'a self, key: &'a StreamKey) -> BoxFuture<'a, Option<Box<dyn RelaySource>>> {
        Box::pin(async move {
            let (owner, claim) = live_owners(&self.cluster, key).await.into_iter().next()?;
            Some(Box::new(OwnerSource { owner, node: claim.node, cluster: self.cluster.clone() })
                as Box<dyn RelaySource>)
        })
    }

    fn remote_hls<'a>(&'a self, key: &'a StreamKey, grace: Duration) -> BoxFuture<'a, Option<Box<dyn RemoteHls>>> {
        Box::pin(async move {
            let (hls, owner): (Box<dyn RemoteHls>, _) = match self.hls_owner(key).await {
                HlsOwner::Known(owner) => {
                    // What the owner pushed at its last segment is what it would answer: no request per poll.
                    let pushed = self.cluster.pushed_playlist(key, owner.since_ms);
                    let id = owner.actor.get_id();
                    let hls = OwnerHls::new(key.clone(), owner.actor, self.cluster.segments.clone(), pushed);
                    (Box::new(hls), Some((owner.since_ms, id)))
                }
                stale => {
                    let closed = matches!(stale, HlsOwner::Gone) && owner_gone(&self.cluster, key);
                    let playlist = self.cluster.last_playlist(key, grace, closed)?;
                    (Box::new(StaleHls::new(key.clone(), playlist, self.cluster.segments.clone())), None)
                }
            };
            let metered = Metered {
                hls,
                meter: self.meter(key),
                cluster: self.cluster.clone(),
                metrics: self.metrics.clone(),
                key: key.clone(),
                owner,
                grace,
            };
            Some(Box::new(metered) as Box<dyn RemoteHls>)
        })
    }
}

/// A remote stream's HLS whose playlist polls count as this node's viewers, and whose blocking LL-HLS requests
/// park here until the owner's pushed playlist holds what they wait for (no cluster call per request).
struct Metered {
    hls: Box<dyn RemoteHls>,
    meter: PollMeter,
    cluster: ClusterHandle,
    metrics: Arc<Metrics>,
    key: StreamKey,
    /// The owner's claim (which pushed playlist is its) and its export actor; `None` for a stale stream.
    owner: Option<(u64, ActorId)>,
    /// How long a stale stream's last playlist is served.
    grace: Duration,
}

impl Metered {
    /// The owner's latest pushed playlist; for a stream no node owns right now, the newest any owner pushed (a
    /// new owner's, once a publisher is back: parked requests then wake into its playlist).
    fn pushed(&self) -> Option<Bytes> {
        match self.owner {
            Some((since, _)) => self.cluster.pushed_playlist(&self.key, since),
            None => self.stale(),
        }
    }

    /// [`Metered::pushed`], checked against the stream's group: an owner no longer in it (its node died or drained
    /// since this request came) gets what a request made now would, so that a request parked before and answered
    /// after never sends players back behind an answer given meanwhile. Called where a request starts and where
    /// it ends quietly, not at every wake-up.
    fn pushed_now(&self) -> Option<Bytes> {
        match self.owner {
            Some((since, id)) if remote_members(&stream_group(&self.key)).iter().any(|m| m.get_id() == id) => {
                self.cluster.pushed_playlist(&self.key, since)
            }
            _ => self.stale(),
        }
    }

    /// The stream's last pushed state, for a stream this node knows no answering owner of: with its open segment
    /// closed when no node exports it any more and no owner was heard from lately ([`owner_gone`]); as pushed
    /// while its group has members (an owner that did not answer a claim in time, or a new one).
    fn stale(&self) -> Option<Bytes> {
        self.cluster.last_playlist(&self.key, self.grace, owner_gone(&self.cluster, &self.key))
    }

    /// Waits until `ready` holds for the owner's pushed playlist (checked at every push), for at most `wait`; when
    /// nothing is pushed for `quiet` (no owner right now, or it stalls), the playlist as it is.
    async fn park(
        &self,
        wait: Duration,
        quiet: Duration,
        ready: impl Fn(&Bytes) -> Option<bool>,
    ) -> Result<Bytes, Blocking> {
        let notify = self.cluster.hls_waiter(&self.key);
        let deadline = tokio::time::Instant::now() + wait;
        let metrics = &self.metrics;
        metrics.hls_parked.inc();
        let started = std::time::Instant::now();
        // Quiet is counted from the last change of the text: a wake-up that brings nothing new (a copy of the
        // same state passed on by a peer that joined) does not extend it.
        let mut quiet_until = tokio::time::Instant::now() + quiet;
        let mut last: Option<Bytes> = None;
        // Which nodes export the stream: a change (a new owner's export joined, the owner's left) means another
        // owner's pushes may be the ones to wait for, so the request asks again.
        let members = || {
            let mut ids: Vec<ActorId> = remote_members(&stream_group(&self.key)).iter().map(|a| a.get_id()).collect();
            ids.sort();
            ids
        };
        let group = self.owner.map(|_| members());
        let result = loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.cluster.has_left() || group.as_ref().is_some_and(|g| *g != members()) {
                break Err(Blocking::Moved);
            }
            let Some(text) = self.pushed() else { break Err(Blocking::NotFound) };
            match ready(&text) {
                Some(true) => break Ok(text),
                Some(false) => {}
                None => break Err(Blocking::TooFarAhead),
            }
            // The stream's publisher came to this node: its segmenter has what this request waits for.
            if super::has_local_member(&stream_group(&self.key)) {
                break Err(Blocking::Moved);
            }
            if last.as_ref().is_some_and(|l| *l != text) {
                quiet_until = tokio::time::Instant::now() + quiet;
            }
            last = Some(text.clone());
            if tokio::time::timeout_at(deadline.min(quiet_until), notified).await.is_err() {
                if tokio::time::Instant::now() < deadline {
                    break self.pushed_now().ok_or(Blocking::NotFound);
                }
                break Err(Blocking::Timeout);
            }
        };
        metrics.hls_parked.dec();
        metrics.hls_block_wait.observe(started.elapsed().as_secs_f64());
        result
    }
}

impl RemoteHls for Metered {
    fn playlist(&self, wait: Duration) -> BoxFuture<'_, Option<Bytes>> {
        Box::pin(async move {
            self.meter.poll();
            let text = self.hls.playlist(wait).await?;
            // A player starting here loads the init segment and the newest parts next: bring them now.
            let t = String::from_utf8_lossy(&text);
            if let Some(map) = t.lines().rev().find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=")) {
                self.hls.prefetch(map.trim_matches('"'));
            }
            let parts = t.lines().rev().filter(|l| l.starts_with("#EXT-X-PART:")).take(6);
            for name in parts.filter_map(|l| l.split("URI=\"").nth(1)).filter_map(|u| u.split('"').next()) {
                self.hls.prefetch(name);
            }
            Some(text)
        })
    }

    fn segment<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Option<Bytes>> {
        self.hls.segment(name)
    }

    fn prefetch(&self, name: &str) {
        self.hls.prefetch(name);
    }

    fn current(&self) -> Option<Bytes> {
        self.pushed_now()
    }

    fn playlist_blocking(
        &self,
        msn: u64,
        part: Option<u64>,
        skip: bool,
        wait: Duration,
        quiet: Duration,
    ) -> BoxFuture<'_, Result<Bytes, Blocking>> {
        Box::pin(async move {
            self.meter.poll();
            // Before the owner's first push reached this node: its answer, as it is.
            if self.pushed_now().and_then(|t| next_part_in(&String::from_utf8_lossy(&t))).is_none() {
                return self.hls.playlist(wait).await.ok_or(Blocking::NotFound);
            }
            let answer = self
                .park(wait, quiet, |text| {
                    let ((open, parts), ended) = next_part_in(&String::from_utf8_lossy(text))?;
                    let far = msn > open + 1 || (msn == open && part.is_some_and(|p| p > parts + 3));
                    let has = ended
                        || match part {
                            Some(p) => (msn, p) < (open, parts),
                            None => msn < open,
                        };
                    if has {
                        Some(true)
                    } else if far {
                        None
                    } else {
                        Some(false)
                    }
                })
                .await;
            // The player asks for the newest part next: fetch it from the owner while this answer travels.
            if let Ok(text) = &answer {
                let text = String::from_utf8_lossy(text);
                let newest = text.lines().rev().find(|l| l.starts_with("#EXT-X-PART:"));
                if let Some(name) = newest.and_then(|l| l.split("URI=\"").nth(1)).and_then(|u| u.split('"').next()) {
                    self.hls.prefetch(name);
                }
            }
            // A delta update made from the owner's pushed text: the same bytes the owner answers.
            match answer {
                Ok(text) if skip => Ok(skip_of(&String::from_utf8_lossy(&text)).map(Bytes::from).unwrap_or(text)),
                other => other,
            }
        })
    }

    fn growing(&self, name: &str, wait: Duration) -> Option<tokio::sync::watch::Receiver<crate::stream::Growth>> {
        // Only the part the owner's playlist hints at: any other name costs no cluster call.
        let hint = format!("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{name}\"");
        if !self.pushed().is_some_and(|t| String::from_utf8_lossy(&t).contains(&hint)) {
            return None;
        }
        self.hls.growing(name, wait)
    }

    fn file<'a>(&'a self, name: &'a str, wait: Duration) -> BoxFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            // A part the owner's playlist only hints at: wait until a push lists it, then fetch it.
            let hint = format!("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{name}\"");
            if self.pushed().is_some_and(|t| String::from_utf8_lossy(&t).contains(&hint)) {
                let listed = format!("URI=\"{name}\"");
                let ready = |t: &Bytes| {
                    let text = String::from_utf8_lossy(t);
                    Some(text.contains(&listed) && !text.contains(&hint) || text.contains("#EXT-X-ENDLIST"))
                };
                self.park(wait, wait, ready).await.ok()?;
            }
            self.hls.segment(name).await
        })
    }
}

/// The files a previous owner's `window` names, in the order a new owner copies them: init segments (every
/// player needs them), then whole segments and then parts, newest first (players near the live edge ask for
/// those first). `EXT-X-GAP` segments have no file.
fn window_files(window: &[ListedSegment]) -> Vec<String> {
    let mut files: Vec<String> = Vec::new();
    for m in window.iter().filter_map(|s| s.map.clone()) {
        if !files.contains(&m) {
            files.push(m);
        }
    }
    files.extend(window.iter().rev().filter(|s| !s.gap).map(|s| s.uri.clone()));
    files.extend(window.iter().rev().flat_map(|s| s.parts.iter().rev().map(|p| p.name.clone())));
    files
}

/// The live owner of a stream on another node (see [`Ownership::relay_source`]).
struct OwnerSource {
    owner: ActorRef<RemoteMsg>,
    node: String,
    cluster: ClusterHandle,
}

impl RelaySource for OwnerSource {
    fn node(&self) -> &str {
        &self.node
    }

    fn start(
        self: Box<Self>,
        publisher: Publisher,
        viewers: Arc<ViewerCounts>,
        grace: Duration,
    ) -> BoxFuture<'static, Result<ActorCell, String>> {
        Box::pin(async move {
            let args = RelayArgs {
                publisher,
                owner: self.owner,
                owner_node: self.node,
                viewers,
                cluster: self.cluster,
                grace,
            };
            match Actor::spawn(None, RelaySink, args).await {
                Ok((a, _)) => Ok(a.get_cell()),
                Err(e) => Err(format!("relay: {e}")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::playlist::PartInfo;

    fn listed(msn: u64, map: &str, gap: bool, parts: &[&str]) -> ListedSegment {
        ListedSegment {
            msn,
            uri: format!("s-{msn}.m4s"),
            duration: 2.0,
            program_date_time: None,
            discontinuity: false,
            map: Some(map.into()),
            gap,
            parts: parts.iter().map(|p| PartInfo { name: p.to_string(), duration: 0.2, independent: false }).collect(),
        }
    }

    #[test]
    fn a_window_is_copied_init_segments_first_then_newest_segments_then_newest_parts() {
        let window = [
            listed(4, "init1.mp4", false, &[]),
            listed(5, "init2.mp4", false, &["p50.m4s", "p51.m4s"]),
            listed(6, "init2.mp4", true, &["p60.m4s"]),
        ];
        assert_eq!(
            window_files(&window),
            ["init1.mp4", "init2.mp4", "s-5.m4s", "s-4.m4s", "p60.m4s", "p51.m4s", "p50.m4s"],
            "no file for the gap segment, each init segment once"
        );
    }
}
