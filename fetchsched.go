package statesync

import (
	"sort"
	"time"

	"github.com/cometbft/cometbft/p2p"
)

// Scheduling constants. They are not knobs: the per-peer deadline adapts to
// each peer's measured rate, and chunk_request_timeout bounds it.
const (
	// maxSilentStrikes is how many timeouts in a row, with no delivery
	// between them, make the scheduler stop asking a peer for this
	// snapshot.
	maxSilentStrikes = 3
	// maxChunkStrikes is the allowance of misbehaviour (duplicates,
	// repeated "missing", chunks nobody asked for) before a peer is to be
	// punished. A few are tolerated: a reconnecting honest peer may
	// answer an old request twice.
	maxChunkStrikes = 3
	// deadlineSlack multiplies the time a peer is expected to take for a
	// request (from its measured rate and its queue) into the deadline.
	deadlineSlack = 3
	// hedgeSlack multiplies it into the time after which the chunk the
	// applier needs next is asked of a second peer.
	hedgeSlack = 1.5
	// minChunkDeadline is the shortest deadline, covering round trip and
	// the server's read of the chunk (see floor).
	minChunkDeadline = 500 * time.Millisecond
	// planHorizon bounds how far past the lowest needed chunk one call to
	// assign looks when placing work on slow peers.
	planHorizon = 4096
	// rateWeight is the weight of the newest sample in a peer's rate.
	rateWeight = 0.3
)

// chunkRequest is a chunk request the scheduler wants sent.
type chunkRequest struct {
	peer  p2p.ID
	index uint32
}

// fetchVerdict is the scheduler's judgement of one chunk response.
type fetchVerdict int

const (
	// verdictProgress: a still-needed chunk asked of this peer; keep it.
	verdictProgress fetchVerdict = iota
	// verdictStale: asked of this peer, but no longer needed (another
	// peer answered first, or it was fetched after a timeout); drop it,
	// nobody is to blame.
	verdictStale
	// verdictStrike: nobody asked this peer for it, or it answered twice;
	// drop it and count a strike.
	verdictStrike
	// verdictPunish: a strike past maxChunkStrikes: the peer is no longer
	// used and is to be punished.
	verdictPunish
)

// askState is what became of one request to one peer.
type askState uint8

const (
	askInFlight  askState = iota + 1 // sent, not answered
	askWithdrawn                     // timed out or lost a hedge race; one late answer is fine
	askAnswered                      // answered; another answer is a duplicate
)

// fetchReq is one request in flight to one peer.
type fetchReq struct {
	sent     time.Time
	queued   int       // requests in the peer's queue when sent, this one included
	deadline time.Time // timed out after this
}

// fetchPeer is the scheduler's view of one peer serving the snapshot.
type fetchPeer struct {
	window   window // cap on requests in flight (window.go)
	inflight map[uint32]*fetchReq
	asked    map[uint32]askState // every index ever asked, by outcome
	lacks    map[uint32]struct{} // indexes the peer said it does not have
	timeouts int                 // timeouts in a row without a delivery
	rate     float64             // bytes per second over recent chunks; 0 = unknown
	lastRecv time.Time           // last delivery that counted as progress
	since    time.Time           // first request sent
}

// fetchScheduler decides which chunk to request from which peer, and when a
// request has failed. Goroutine-free and not safe for concurrent use: the
// restore loop owns it; time is passed in, so tests and the fuzz target
// drive it deterministically.
//
// Deadlines are absolute and set when a request is sent: deadlineSlack
// times the time the peer is expected to take for it (its queue of
// requests ahead, at its measured rate), at least floor (a fifth of the
// ceiling, 0.5 s at least) and at
// most the ceiling (chunk_request_timeout). Nothing a peer sends moves a
// deadline. A timed-out request is re-requested elsewhere, halves the
// peer's window and lowers its rate estimate; maxSilentStrikes timeouts in
// a row with no delivery for at least the ceiling drop the peer (see
// unhelpful).
//
// Only a delivery of a still-needed chunk asked of that peer is progress.
// What a hostile peer can do, and the bound: a duplicate, a repeated
// "missing", or a chunk it was not asked for is a strike, and past
// maxChunkStrikes the peer is dropped and to be punished (verdictPunish);
// withholding a chunk holds it at most until its deadline, and the chunk
// the applier needs next is asked of a second peer as soon as it is
// overdue against the first peer's own rate (hedging: the first answer
// wins, the other request is withdrawn and its late answer is harmless).
// Memory is bounded by the chunk count per peer in use.
//
// Work is placed by expected delivery time: assign simulates the peers'
// queues at their measured rates and hands each needed chunk, lowest
// first, to the peer expected to deliver it first; a chunk whose best peer
// has no room waits for it, so a slow peer gets chunks needed later.
type fetchScheduler struct {
	height    uint64 // the snapshot's, to recognise late answers to an earlier attempt
	format    uint32
	n         uint32
	maxWindow int
	// startWindow is a new peer's window (maxWindow unless set): it
	// grows by one per delivery, so a peer whose rate is not known yet
	// holds few chunks (slow start).
	startWindow int
	ceiling     time.Duration
	done        []bool                         // fetched (or applied)
	owners      map[uint32]map[p2p.ID]struct{} // in-flight index -> peers asked (at most 2)
	peers       map[p2p.ID]*fetchPeer
	strikes     map[p2p.ID]int      // misbehaviour, kept across removePeer
	silent      map[p2p.ID]struct{} // peers dropped for answering nothing
	cursor      uint32              // every index below is done
	avgChunk    float64             // bytes per chunk, moving average; 0 = none seen
	// counters, for logs
	timeouts, hedges int
}

func newFetchScheduler(n uint32, window int, ceiling time.Duration) *fetchScheduler {
	if window < 1 {
		window = 1
	}
	return &fetchScheduler{
		n:         n,
		maxWindow: window,
		ceiling:   ceiling,
		done:      make([]bool, n),
		owners:    make(map[uint32]map[p2p.ID]struct{}),
		peers:     make(map[p2p.ID]*fetchPeer),
		strikes:   make(map[p2p.ID]int),
		silent:    make(map[p2p.ID]struct{}),
	}
}

// addPeer starts using peer (no-op if known).
func (f *fetchScheduler) addPeer(peer p2p.ID) {
	if _, ok := f.peers[peer]; ok {
		return
	}
	delete(f.silent, peer)
	f.peers[peer] = &fetchPeer{
		window:   newWindow(f.startWindow, f.maxWindow),
		inflight: make(map[uint32]*fetchReq),
		asked:    make(map[uint32]askState),
		lacks:    make(map[uint32]struct{}),
	}
}

// hasPeer reports whether peer is in use.
func (f *fetchScheduler) hasPeer(peer p2p.ID) bool {
	_, ok := f.peers[peer]
	return ok
}

// numPeers returns the number of peers in use.
func (f *fetchScheduler) numPeers() int { return len(f.peers) }

// removePeer stops using peer; its in-flight chunks become needed again.
func (f *fetchScheduler) removePeer(peer p2p.ID) {
	p, ok := f.peers[peer]
	if !ok {
		return
	}
	for index := range p.inflight {
		f.dropOwner(index, peer)
	}
	delete(f.peers, peer)
}

// forget stops using peer and clears what is known of it, so that if it
// advertises the snapshot again it starts afresh.
func (f *fetchScheduler) forget(peer p2p.ID) {
	f.removePeer(peer)
	delete(f.silent, peer)
	delete(f.strikes, peer)
}

func (f *fetchScheduler) dropOwner(index uint32, peer p2p.ID) {
	if o := f.owners[index]; o != nil {
		delete(o, peer)
		if len(o) == 0 {
			delete(f.owners, index)
		}
	}
}

// have marks index fetched without a request (a chunk found in the spool).
func (f *fetchScheduler) have(index uint32) {
	if index < f.n && !f.done[index] {
		f.markDone(index)
	}
}

func (f *fetchScheduler) markDone(index uint32) {
	f.done[index] = true
	for f.cursor < f.n && f.done[f.cursor] {
		f.cursor++
	}
}

// refetch marks index needed again (its chunk was discarded).
func (f *fetchScheduler) refetch(index uint32) {
	if index >= f.n {
		return
	}
	f.done[index] = false
	if index < f.cursor {
		f.cursor = index
	}
	for id := range f.peers {
		if f.peers[id].asked[index] == askAnswered {
			f.peers[id].asked[index] = askWithdrawn
		}
	}
}

// cost returns the seconds p is expected to take per chunk, or ok=false
// when nothing is measured yet (every peer then counts as equal).
func (f *fetchScheduler) cost(p *fetchPeer) (float64, bool) {
	if f.avgChunk <= 0 {
		return 0, false
	}
	rate := p.rate
	if rate <= 0 { // unmeasured: assume it is as fast as the fastest
		for _, q := range f.peers {
			rate = max(rate, q.rate)
		}
	}
	if rate <= 0 {
		return 0, false
	}
	return f.avgChunk / rate, true
}

// deadlineFor returns the deadline of a request to p sent at now with
// queued requests (this one included) in p's queue: deadlineSlack times the
// work ahead at p's measured rate, within [floor, ceiling]; the
// ceiling while p's rate is unknown.
func (f *fetchScheduler) deadlineFor(p *fetchPeer, queued int, now time.Time) time.Time {
	c, ok := f.cost(p)
	if !ok || p.rate <= 0 {
		return now.Add(f.ceiling)
	}
	work := time.Duration(float64(queued) * c * float64(time.Second))
	return now.Add(min(f.ceiling, max(f.floor(), deadlineSlack*work)))
}

// floor is the shortest deadline: minChunkDeadline or a fifth of the
// ceiling, whichever is longer (delivery times jitter far more than a
// measured rate suggests on a loaded machine), within the ceiling.
func (f *fetchScheduler) floor() time.Duration {
	return min(f.ceiling, max(minChunkDeadline, f.ceiling/5))
}

// hedgeAt returns when req, held by p, is overdue against p's rate as
// measured now (the fastest peer's while p's is unknown), and no later
// than its deadline.
func (f *fetchScheduler) hedgeAt(p *fetchPeer, req *fetchReq) time.Time {
	c, ok := f.cost(p)
	if !ok {
		return req.deadline
	}
	work := time.Duration(hedgeSlack * float64(req.queued) * c * float64(time.Second))
	return minTime(req.deadline, req.sent.Add(max(f.floor()/2, work)))
}

func (f *fetchScheduler) send(id p2p.ID, p *fetchPeer, index uint32, now time.Time) chunkRequest {
	if p.since.IsZero() {
		p.since = now
	}
	queued := len(p.inflight) + 1
	p.inflight[index] = &fetchReq{sent: now, queued: queued, deadline: f.deadlineFor(p, queued, now)}
	p.asked[index] = askInFlight
	if f.owners[index] == nil {
		f.owners[index] = make(map[p2p.ID]struct{}, 2)
	}
	f.owners[index][id] = struct{}{}
	return chunkRequest{peer: id, index: index}
}

// sortedPeers returns the peer IDs in a fixed order (determinism).
func (f *fetchScheduler) sortedPeers() []p2p.ID {
	ids := make([]p2p.ID, 0, len(f.peers))
	for id := range f.peers {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// assign hedges the chunk the applier needs next if it is overdue, then
// fills the peers' windows, and returns the requests to send.
func (f *fetchScheduler) assign(now time.Time) []chunkRequest {
	var out []chunkRequest
	if req, ok := f.hedge(f.sortedPeers(), now); ok {
		out = append(out, req)
	}
	return append(out, f.fill(now)...)
}

// fill fills the peers' windows (no hedging) and returns the requests to
// send.
func (f *fetchScheduler) fill(now time.Time) []chunkRequest {
	ids := f.sortedPeers()
	var out []chunkRequest
	// Simulated finish time of each peer's queue, in seconds from now.
	finish := make(map[p2p.ID]float64, len(ids))
	room := 0
	for _, id := range ids {
		p := f.peers[id]
		if c, ok := f.cost(p); ok {
			finish[id] = float64(len(p.inflight)) * c
		} else {
			finish[id] = float64(len(p.inflight))
		}
		if !p.window.full(len(p.inflight)) {
			room++
		}
	}
	for i, seen := f.cursor, 0; i < f.n && room > 0 && seen < planHorizon; i++ {
		if f.done[i] || f.owners[i] != nil {
			continue
		}
		seen++
		best, bestAt := p2p.ID(""), 0.0
		for _, id := range ids {
			p := f.peers[id]
			if _, lacks := p.lacks[i]; lacks {
				continue
			}
			c, ok := f.cost(p)
			if !ok {
				c = 1
			}
			if at := finish[id] + c; best == "" || at < bestAt {
				best, bestAt = id, at
			}
		}
		if best == "" {
			continue // nobody has it
		}
		finish[best] = bestAt
		p := f.peers[best]
		if p.window.full(len(p.inflight)) {
			continue // planned for a busy peer that will deliver it sooner
		}
		out = append(out, f.send(best, p, i, now))
		if p.window.full(len(p.inflight)) {
			room--
		}
	}
	return out
}

// hedge asks a second peer for the lowest needed chunk when its holder is
// overdue against its own rate, or when another peer is expected to
// deliver it in less than half the time the holder still needs (near the
// end of a restore, a slow peer's chunk when the fast peers run out of
// work). The second peer may go one request past its window.
func (f *fetchScheduler) hedge(ids []p2p.ID, now time.Time) (chunkRequest, bool) {
	i := f.cursor
	holders := f.owners[i]
	if i >= f.n || len(holders) != 1 {
		return chunkRequest{}, false
	}
	var holder *fetchPeer
	for id := range holders {
		holder = f.peers[id]
	}
	req := holder.inflight[i]
	overdue := !now.Before(f.hedgeAt(holder, req))
	best, bestAt := p2p.ID(""), 0.0
	for _, id := range ids {
		p := f.peers[id]
		if _, held := holders[id]; held || len(p.inflight) > p.window.size {
			continue
		}
		if _, lacks := p.lacks[i]; lacks {
			continue
		}
		c, ok := f.cost(p)
		if !ok {
			c = 1
		}
		if at := float64(len(p.inflight)+1) * c; best == "" || at < bestAt {
			best, bestAt = id, at
		}
	}
	if best == "" {
		return chunkRequest{}, false
	}
	if !overdue {
		hc, ok := f.cost(holder)
		if !ok || holder.rate <= 0 || f.peers[best].rate <= 0 {
			return chunkRequest{}, false
		}
		remaining := req.sent.Add(time.Duration(float64(req.queued) * hc * float64(time.Second))).Sub(now).Seconds()
		if 2*bestAt >= remaining || remaining < (f.floor()/2).Seconds() {
			return chunkRequest{}, false
		}
	}
	f.hedges++
	return f.send(best, f.peers[best], i, now), true
}

// shift moves every request in flight d later: the restore held the
// peers' answers back for d (its memory budget was full), which is no
// fault of theirs.
func (f *fetchScheduler) shift(d time.Duration) {
	for _, p := range f.peers {
		for _, req := range p.inflight {
			req.sent = req.sent.Add(d)
			req.deadline = req.deadline.Add(d)
		}
		if !p.lastRecv.IsZero() {
			p.lastRecv = p.lastRecv.Add(d)
		}
	}
}

// unassign withdraws a request that could not be sent; the chunk is
// assigned again on the next call to assign.
func (f *fetchScheduler) unassign(peer p2p.ID, index uint32) {
	if p, ok := f.peers[peer]; ok {
		if _, inflight := p.inflight[index]; inflight {
			delete(p.inflight, index)
			delete(p.asked, index)
			f.dropOwner(index, peer)
		}
	}
}

// strike counts one misbehaviour of peer and says whether it is now to be
// punished (its use stops then).
func (f *fetchScheduler) strike(peer p2p.ID) fetchVerdict {
	f.strikes[peer]++
	if f.strikes[peer] > maxChunkStrikes {
		f.removePeer(peer)
		return verdictPunish
	}
	return verdictStrike
}

// answer records that peer answered index, and judges whether the answer
// was asked for: verdictProgress for the answer to a live or withdrawn
// request, a strike otherwise.
func (f *fetchScheduler) answer(peer p2p.ID, index uint32) (*fetchPeer, fetchVerdict) {
	p, ok := f.peers[peer]
	if _, silent := f.silent[peer]; !ok && silent {
		return nil, verdictStale // late answers of a peer dropped for silence
	}
	if !ok || index >= f.n {
		return nil, f.strike(peer)
	}
	switch p.asked[index] {
	case askInFlight, askWithdrawn:
	default: // never asked, or answered already
		return nil, f.strike(peer)
	}
	p.asked[index] = askAnswered
	if _, ok := p.inflight[index]; ok {
		delete(p.inflight, index)
		f.dropOwner(index, peer)
	}
	return p, verdictProgress
}

// late reports whether peer was asked for index by this scheduler and
// has not answered it yet; the answer is then recorded (a second one is
// not late but a duplicate). Used for answers arriving during an attempt
// at another snapshot.
func (f *fetchScheduler) late(peer p2p.ID, index uint32) bool {
	p, ok := f.peers[peer]
	if !ok || index >= f.n {
		return false
	}
	switch p.asked[index] {
	case askInFlight, askWithdrawn:
		if _, inflight := p.inflight[index]; inflight {
			delete(p.inflight, index)
			f.dropOwner(index, peer)
		}
		p.asked[index] = askAnswered
		return true
	}
	return false
}

// received judges a chunk of size bytes from peer. On verdictProgress the
// chunk is to be kept: it is marked fetched, any other request for it is
// withdrawn (the hedge race is over), and the peer's rate is updated.
func (f *fetchScheduler) received(peer p2p.ID, index uint32, size int, now time.Time) fetchVerdict {
	var sent time.Time
	if p := f.peers[peer]; p != nil && p.inflight[index] != nil {
		sent = p.inflight[index].sent
	}
	p, v := f.answer(peer, index)
	if v != verdictProgress {
		return v
	}
	if f.done[index] {
		return verdictStale
	}
	for other := range f.owners[index] {
		q := f.peers[other]
		delete(q.inflight, index)
		q.asked[index] = askWithdrawn
	}
	delete(f.owners, index)
	f.markDone(index)
	p.timeouts = 0
	f.measure(p, size, sent, now)
	if f.amongFastest(p) { // no need to probe a fast peer slowly
		p.window.open()
	} else {
		p.window.grow()
	}
	return verdictProgress
}

// amongFastest reports whether p's measured rate is at least half the
// fastest peer's.
func (f *fetchScheduler) amongFastest(p *fetchPeer) bool {
	best := 0.0
	for _, q := range f.peers {
		best = max(best, q.rate)
	}
	return p.rate > 0 && 2*p.rate >= best
}

// measure updates p's rate with a delivery of size bytes at now of a
// request sent at sent (zero if it had timed out).
func (f *fetchScheduler) measure(p *fetchPeer, size int, sent, now time.Time) {
	if f.avgChunk == 0 {
		f.avgChunk = float64(size)
	} else {
		f.avgChunk += rateWeight * (float64(size) - f.avgChunk)
	}
	start := p.lastRecv
	if sent.After(start) {
		start = sent
	}
	p.lastRecv = now
	if start.IsZero() || size == 0 {
		return
	}
	took := max(now.Sub(start), time.Millisecond).Seconds()
	sample := float64(size) / took
	if p.rate == 0 {
		p.rate = sample
	} else {
		p.rate += rateWeight * (sample - p.rate)
	}
}

// missing records that peer does not have chunk index; it is not asked for
// it again. A "missing" nobody asked for, or repeated, is a strike.
func (f *fetchScheduler) missing(peer p2p.ID, index uint32, _ time.Time) fetchVerdict {
	p, v := f.answer(peer, index)
	if v != verdictProgress {
		return v
	}
	p.lacks[index] = struct{}{}
	return verdictStale
}

// expire times out requests past their deadline, returns them, halves the
// windows of their peers and lowers their rates. A peer that timed out
// maxSilentStrikes times in a row without a delivery is no longer asked.
func (f *fetchScheduler) expire(now time.Time) []chunkRequest {
	var out []chunkRequest
	for _, id := range f.sortedPeers() {
		p := f.peers[id]
		timedOut := false
		for index, req := range p.inflight {
			if now.Before(req.deadline) {
				continue
			}
			delete(p.inflight, index)
			p.asked[index] = askWithdrawn
			f.dropOwner(index, id)
			out = append(out, chunkRequest{peer: id, index: index})
			timedOut = true
			f.timeouts++
			// At best it could have delivered one chunk in that time.
			if f.avgChunk > 0 {
				bound := f.avgChunk / max(now.Sub(req.sent).Seconds(), 1e-3)
				if p.rate == 0 || bound < p.rate {
					p.rate = bound
				}
			}
		}
		if timedOut {
			p.window.cut()
			p.timeouts++
			quiet := p.lastRecv
			if quiet.IsZero() {
				quiet = p.since
			}
			// Silent: timeouts in a row and nothing delivered for a whole
			// ceiling (a rate-derived timeout alone only moves work).
			if p.timeouts >= maxSilentStrikes && now.Sub(quiet) >= f.ceiling {
				f.removePeer(id)
				f.silent[id] = struct{}{}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].index < out[j].index })
	return out
}

// nextDeadline returns when the scheduler next needs a call to expire and
// assign: the earliest deadline in flight, or the hedge point of the chunk
// the applier needs next.
func (f *fetchScheduler) nextDeadline() (time.Time, bool) {
	var next time.Time
	found := false
	for _, p := range f.peers {
		for index, req := range p.inflight {
			at := req.deadline
			if index == f.cursor && len(f.owners[index]) == 1 {
				at = f.hedgeAt(p, req)
			}
			if !found || at.Before(next) {
				next, found = at, true
			}
		}
	}
	return next, found
}

// inflight returns the number of chunks in flight.
func (f *fetchScheduler) inflight() int { return len(f.owners) }

// complete reports whether every chunk is done.
func (f *fetchScheduler) complete() bool { return f.cursor >= f.n }

// stalled reports whether some needed chunk cannot be requested from any
// peer in use (all lack it, or there are no peers) and nothing is in flight.
func (f *fetchScheduler) stalled() bool {
	if f.complete() || len(f.owners) > 0 {
		return false
	}
	for i := f.cursor; i < f.n; i++ {
		if f.done[i] {
			continue
		}
		for _, p := range f.peers {
			if _, lacks := p.lacks[i]; !lacks {
				return false
			}
		}
	}
	return true
}

// unhelpful returns, sorted, the peers that said they lack a needed chunk
// and the peers dropped for silence: the ones to blame for a stall.
func (f *fetchScheduler) unhelpful() []p2p.ID {
	var out []p2p.ID
	for id := range f.silent {
		out = append(out, id)
	}
	for id, p := range f.peers {
		for index := range p.lacks {
			if !f.done[index] {
				out = append(out, id)
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
