package main

import (
	"context"
	"time"

	"github.com/cometbft/cometbft/libs/log"

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/internal/progressui"
	"github.com/statesync/statesync/node"
)

// progressEvery is how often a state sync's progress is logged within a
// phase, whether or not anything changed (the README promises it).
const progressEvery = 5 * time.Second

// progressLog decides which progress lines are logged: every change of
// phase, and the latest state whenever every has passed since the last
// line (on an event or a tick). It holds no goroutine.
type progressLog struct {
	logger log.Logger
	every  time.Duration
	phase  statesync.Phase
	last   time.Time // when a line was last logged
}

// event records p, received at now.
func (l *progressLog) event(p statesync.Progress, now time.Time) {
	if p.Phase != l.phase || now.Sub(l.last) >= l.every {
		l.log(p, now)
	}
}

// tick logs current (the latest progress) if no line was logged for every.
func (l *progressLog) tick(current statesync.Progress, now time.Time) {
	if now.Sub(l.last) >= l.every {
		l.log(current, now)
	}
}

func (l *progressLog) log(p statesync.Progress, now time.Time) {
	l.logger.Info("State sync: "+progressui.Line(p), "phase", p.Phase)
	l.phase, l.last = p.Phase, now
}

// logProgress logs the state sync's progress (progressLog) until it ends,
// then the outcome; it returns on ctx's end, when the node stops, or once
// the node has synced.
func logProgress(ctx context.Context, logger log.Logger, ch <-chan statesync.Progress, n *node.Node, every time.Duration) {
	l := &progressLog{logger: logger, every: every}
	tick := time.NewTicker(every / 5)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.Done():
			return
		case <-n.Synced():
			r := n.SyncResult()
			logger.Info("State sync complete; block sync running, backfill in the background",
				"height", r.State.LastBlockHeight, "fell_back", r.FellBack, "took", r.Total.Round(time.Millisecond))
			return
		case p := <-ch:
			l.event(p, time.Now())
		case now := <-tick.C:
			l.tick(n.Reactor().Progress(), now)
		}
	}
}
