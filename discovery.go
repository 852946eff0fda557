package statesync

import (
	"time"

	"github.com/cometbft/cometbft/p2p"
)

// discoveryQuiet is how long no new advertisement must arrive before
// discovery ends early (it never exceeds Config.DiscoveryTime). Peers
// send their snapshots back to back, so a short pause means they are done.
const discoveryQuiet = 250 * time.Millisecond

// minRetryInterval bounds how often peers are asked again and a deferred
// snapshot retried when DiscoveryTime is 0 ("no wait").
const minRetryInterval = time.Second

// discovery decides when Sync has learnt enough to choose a snapshot.
// Config.DiscoveryTime is the longest wait, not a fixed one: discovery ends
// earlier once a snapshot is usable and, after discoveryQuiet without news,
// either every connected peer speaking the snapshot channels has
// advertised something, or at least two peers advertise the best snapshot.
// DiscoveryTime 0 ends it as soon as any snapshot is usable.
//
// Goroutine-free; the syncer loop owns it. A peer can only make it end
// later (by advertising), never later than the deadline.
type discovery struct {
	deadline time.Time
	quiet    time.Duration
	answered map[p2p.ID]struct{}
	lastNews time.Time
	done     bool
}

func newDiscovery(now time.Time, maxWait time.Duration) *discovery {
	return &discovery{
		deadline: now.Add(maxWait),
		quiet:    min(discoveryQuiet, maxWait),
		answered: make(map[p2p.ID]struct{}),
		lastNews: now,
	}
}

// advertised records an accepted advertisement from peer.
func (d *discovery) advertised(peer p2p.ID, now time.Time) {
	d.answered[peer] = struct{}{}
	d.lastNews = now
}

// ready says whether discovery is over at now, given the connected peers
// that speak the snapshot channels, whether a snapshot is usable, and how
// many peers advertise the best one. If not, it returns when to look
// again (news from peers may come earlier).
func (d *discovery) ready(now time.Time, capable []p2p.ID, usable bool, bestPeers int) (bool, time.Time) {
	if d.done || !now.Before(d.deadline) {
		d.done = true
		return true, time.Time{}
	}
	if !usable {
		return false, d.deadline
	}
	all := len(capable) > 0
	for _, id := range capable {
		if _, ok := d.answered[id]; !ok {
			all = false
			break
		}
	}
	if !all && bestPeers < 2 {
		return false, d.deadline
	}
	if quietAt := d.lastNews.Add(d.quiet); now.Before(quietAt) {
		return false, minTime(quietAt, d.deadline)
	}
	d.done = true
	return true, time.Time{}
}
