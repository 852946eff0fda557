package statesync

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestConfigRPCServersReason: the rpc_servers error gives the reason that
// applies: no server, a single one, or one server under several spellings.
func TestConfigRPCServersReason(t *testing.T) {
	for _, tc := range []struct {
		servers       []string
		want, notWant string
	}{
		{nil, "got none", "same server"},
		{[]string{"rpc.example.com:26657"}, `only "rpc.example.com:26657": a second server is needed`, "same server"},
		{[]string{"a:1", "http://A:1/", "tcp://a:1"}, "the same server 3 times: the same server twice gives no witness",
			"only"},
	} {
		c := DefaultConfig()
		c.Enable, c.TrustHeight, c.TrustHash = true, 1, validTrustHash
		c.RPCServers = tc.servers
		err := c.ValidateBasic()
		require.ErrorIs(t, err, ErrInvalidConfig)
		require.ErrorContains(t, err, "statesync.rpc_servers: at least 2 distinct RPC servers are required")
		require.ErrorContains(t, err, tc.want)
		require.NotContains(t, err.Error(), tc.notWant)
	}
}
