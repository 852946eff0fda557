package node

import (
	"errors"
	"strings"

	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/libs/service"
)

// stopNoise wraps the logger given to CometBFT. When a node stops before
// it left state sync (a failed state sync, a signal during it), CometBFT
// logs errors that are expected then and alarm operators for nothing: its
// consensus reactor stops the consensus state, which never started ("Not
// stopping State service -- has not been started yet", then "Error
// stopping consensus state" with service.ErrNotStarted), and the switch's
// accept routine reports the transport it was waiting on as closed. Those
// are logged at debug level; every other message passes unchanged.
type stopNoise struct{ log.Logger }

func (l stopNoise) Error(msg string, keyvals ...any) {
	if isStopNoise(msg, keyvals) {
		l.Logger.Debug(msg, keyvals...)
		return
	}
	l.Logger.Error(msg, keyvals...)
}

func (l stopNoise) With(keyvals ...any) log.Logger { return stopNoise{l.Logger.With(keyvals...)} }

func isStopNoise(msg string, keyvals []any) bool {
	switch {
	case strings.HasPrefix(msg, "Not stopping ") && strings.HasSuffix(msg, "has not been started yet"):
		return true
	case msg == "Stopped accept routine, as transport is closed":
		return true
	case msg == "Error stopping consensus state":
		for i := 1; i < len(keyvals); i += 2 {
			if err, ok := keyvals[i].(error); ok && errors.Is(err, service.ErrNotStarted) {
				return true
			}
		}
	}
	return false
}
