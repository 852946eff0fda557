package sdknet

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// RPCGet GETs a CometBFT RPC path and decodes its result into out.
func RPCGet(base, path string, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var env struct {
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("%s: %w: %.200s", path, err, body)
	}
	if len(env.Error) > 0 && string(env.Error) != "null" {
		return fmt.Errorf("%s: %s", path, env.Error)
	}
	return json.Unmarshal(env.Result, out)
}

// Status is the part of CometBFT's /status the harness reads.
type Status struct {
	SyncInfo struct {
		LatestBlockHeight   int64 `json:"latest_block_height,string"`
		EarliestBlockHeight int64 `json:"earliest_block_height,string"`
		CatchingUp          bool  `json:"catching_up"`
	} `json:"sync_info"`
}

func Height(base string) (int64, error) {
	var s Status
	err := RPCGet(base, "/status", &s)
	return s.SyncInfo.LatestBlockHeight, err
}

// BlockID returns the hash of block h and the app hash in its header (the
// app's state after h-1), both upper-case hex.
func BlockID(base string, h int64) (hash, appHash string, err error) {
	var b struct {
		BlockID struct {
			Hash string `json:"hash"`
		} `json:"block_id"`
		Block struct {
			Header struct {
				AppHash string `json:"app_hash"`
			} `json:"header"`
		} `json:"block"`
	}
	err = RPCGet(base, "/block?height="+strconv.FormatInt(h, 10), &b)
	return b.BlockID.Hash, b.Block.Header.AppHash, err
}

// ABCIInfo returns the app's last height and app hash (upper-case hex) as
// the node's app reports them.
func ABCIInfo(base string) (int64, string, error) {
	var r struct {
		Response struct {
			LastBlockHeight  int64  `json:"last_block_height,string"`
			LastBlockAppHash string `json:"last_block_app_hash"`
		} `json:"response"`
	}
	if err := RPCGet(base, "/abci_info", &r); err != nil {
		return 0, "", err
	}
	raw, err := base64.StdEncoding.DecodeString(r.Response.LastBlockAppHash)
	if err != nil {
		return 0, "", err
	}
	return r.Response.LastBlockHeight, strings.ToUpper(hex.EncodeToString(raw)), nil
}

// Balances queries cosmos.bank.v1beta1.Query/AllBalances for addr at
// height over the SDK's gRPC server at grpcAddr, and returns "amountdenom"
// strings, sorted.
func Balances(grpcAddr, addr string, height int64) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := appendBytesField(nil, 1, []byte(addr)) // QueryAllBalancesRequest.address
	resp, err := GRPCUnary(ctx, grpcAddr, "/cosmos.bank.v1beta1.Query/AllBalances", req,
		map[string]string{"x-cosmos-block-height": strconv.FormatInt(height, 10)})
	if err != nil {
		return nil, err
	}
	coins, err := decodeCoins(resp)
	sort.Strings(coins)
	return coins, err
}

// decodeCoins reads QueryAllBalancesResponse.balances (field 1, Coin{denom
// = 1, amount = 2}); other fields are skipped.
func decodeCoins(b []byte) ([]string, error) {
	var coins []string
	err := eachField(b, func(num uint64, coin []byte) error {
		if num != 1 {
			return nil
		}
		var denom, amount string
		err := eachField(coin, func(num uint64, v []byte) error {
			switch num {
			case 1:
				denom = string(v)
			case 2:
				amount = string(v)
			}
			return nil
		})
		coins = append(coins, amount+denom)
		return err
	})
	return coins, err
}
