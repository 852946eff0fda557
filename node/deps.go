// Package node wires the statesync Reactor into a CometBFT v0.40 node.
package node

import (
	_ "github.com/cometbft/cometbft/node"
	_ "github.com/cometbft/cometbft/light/provider/http"
	_ "github.com/cometbft/cometbft/rpc/client/http"
)
