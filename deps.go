package statesync

import (
	_ "github.com/cometbft/cometbft-db"
	_ "github.com/cometbft/cometbft/light"
	_ "github.com/cometbft/cometbft/p2p"
	_ "github.com/cometbft/cometbft/proxy"
	_ "github.com/cometbft/cometbft/state"
	_ "github.com/cometbft/cometbft/store"
	_ "github.com/cosmos/gogoproto/proto"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/stretchr/testify/require"
	_ "go.uber.org/goleak"
)
