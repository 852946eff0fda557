package statesync

import "errors"

// The error vocabulary of the package. Every error returned by an exported
// function wraps one of these (with %w) where a caller may want to branch on
// the cause with errors.Is; the documentation of each function says which.
var (
	// ErrStopped is returned by calls made on, or interrupted by, a stopped
	// Reactor.
	ErrStopped = errors.New("statesync: reactor stopped")

	// ErrSyncInProgress is returned by Sync when another Sync is running.
	ErrSyncInProgress = errors.New("statesync: a sync is already in progress")

	// ErrNoSnapshots is returned by Sync when discovery ended without any
	// usable snapshot: no peer advertised one within the discovery bound.
	// The node may fall back to block sync from genesis, or retry later.
	ErrNoSnapshots = errors.New("statesync: no suitable snapshots found")

	// ErrAllSnapshotsRejected is returned by Sync when snapshots were found
	// but every one of them was rejected (by the app, by verification, or
	// because no peer could serve its chunks), or could not be verified
	// within Config.DiscoveryTimeout (the error then also wraps the last
	// verification failure, e.g. ErrProvidersDisagree).
	ErrAllSnapshotsRejected = errors.New("statesync: all snapshots were rejected")

	// ErrRejectSnapshot means the current snapshot must be dropped and the
	// next one tried.
	ErrRejectSnapshot = errors.New("statesync: snapshot rejected")

	// ErrAbort means the application asked to abort the whole state sync.
	ErrAbort = errors.New("statesync: aborted by the application")

	// ErrRetrySnapshot means the application asked to restart the current
	// snapshot (fetched chunks are kept).
	ErrRetrySnapshot = errors.New("statesync: retry snapshot")

	// ErrTimeout is returned when a request to a peer got no answer in time.
	ErrTimeout = errors.New("statesync: timed out")

	// ErrNoPeers is returned when no connected peer can serve a request.
	ErrNoPeers = errors.New("statesync: no peers available")

	// ErrVerifyFailed means restored or received data did not match what
	// the verified chain says (app hash, height, app version, block hash).
	ErrVerifyFailed = errors.New("statesync: verification failed")

	// ErrPeerMisbehaved is the reason given when a peer is disconnected for
	// sending invalid, unsolicited or rejected data.
	ErrPeerMisbehaved = errors.New("statesync: peer misbehaved")

	// ErrNotEnoughPeers is returned when a light client cannot be built
	// because fewer than two distinct sources (RPC servers or peers) exist.
	ErrNotEnoughPeers = errors.New("statesync: not enough distinct sources")

	// ErrProviderTransient wraps state-provider failures that say nothing
	// about the snapshot (timeouts, unreachable servers, rate limits): the
	// snapshot is kept and tried again.
	ErrProviderTransient = errors.New("statesync: transient state provider error")

	// ErrProvidersDisagree means the sources of verification data (RPC
	// servers, peers) gave answers that cannot all be right: consensus
	// params differing in fields no header commits to, validator sets with
	// different proposer priorities, or data contradicting a verified
	// header, without a majority to settle it. It always comes wrapped with
	// ErrProviderTransient: a provider fault is not a snapshot fault, and
	// the snapshot is tried again later (when other sources may be used).
	ErrProvidersDisagree = errors.New("statesync: verification sources disagree")

	// ErrHeightNotAvailable means a height needed for verification (a
	// snapshot's height+1 or height+2) does not exist yet: the snapshot is
	// at the chain tip and is tried again later.
	ErrHeightNotAvailable = errors.New("statesync: height not available yet")

	// ErrInvalidConfig is wrapped by Config.ValidateBasic; the message names
	// the offending field by its TOML key.
	ErrInvalidConfig = errors.New("statesync: invalid config")

	// ErrTrustExpired means the configured trust root is older than the
	// trust period: choose a more recent trust height and hash.
	ErrTrustExpired = errors.New("statesync: trust root expired")

	// ErrDiskBudget means the chosen snapshot does not fit in
	// Config.ChunkDiskBudget; the message says how much it needs.
	ErrDiskBudget = errors.New("statesync: chunk spool exceeds chunk_disk_budget")

	// ErrBackfill wraps a backfill failure; it is reported, never fatal.
	ErrBackfill = errors.New("statesync: backfill failed")
)
