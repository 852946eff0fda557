package statesync

// window is one peer's cap on requests in flight, kept AIMD style: it grows
// by one per answered request up to its ceiling and is halved, never below
// one, per timeout event. The chunk scheduler (fetchsched.go) and the
// backfill block queue (blockqueue.go) keep one per peer; each decides
// what counts as an answer and as one timeout event.
type window struct {
	size    int // requests allowed in flight now
	ceiling int // the most it grows to
}

// newWindow starts a window at start (the ceiling when start is not in
// 1..ceiling); a ceiling below 1 is 1.
func newWindow(start, ceiling int) window {
	ceiling = max(1, ceiling)
	if start < 1 || start > ceiling {
		start = ceiling
	}
	return window{size: start, ceiling: ceiling}
}

// full reports whether inflight requests fill the window.
func (w window) full(inflight int) bool { return inflight >= w.size }

// grow widens the window by one request, up to the ceiling.
func (w *window) grow() { w.size = min(w.ceiling, w.size+1) }

// open widens the window to its ceiling at once (a peer known to be fast).
func (w *window) open() { w.size = w.ceiling }

// cut halves the window, never below one request.
func (w *window) cut() { w.size = max(1, w.size/2) }
