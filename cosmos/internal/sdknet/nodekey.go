package sdknet

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
)

// NodeKey is a CometBFT node key made with the standard library (so that
// the e2e test binary, built with -race, needs no CometBFT package):
// node_key.json holds the ed25519 private key (seed and public key, as
// CometBFT's PrivKeyEd25519), and the node ID is the hex of the first 20
// bytes of the public key's SHA-256 (CometBFT's p2p.PubKeyToID).
type NodeKey struct {
	Priv ed25519.PrivateKey
}

// NewNodeKey generates a node key.
func NewNodeKey() (NodeKey, error) {
	_, priv, err := ed25519.GenerateKey(nil)
	return NodeKey{Priv: priv}, err
}

// ID is the CometBFT node ID of k.
func (k NodeKey) ID() string {
	sum := sha256.Sum256(k.Priv.Public().(ed25519.PublicKey))
	return hex.EncodeToString(sum[:20])
}

// Save writes k as home's config/node_key.json.
func (k NodeKey) Save(home string) error {
	var f struct {
		PrivKey struct {
			Type  string `json:"type"`
			Value string `json:"value"`
		} `json:"priv_key"`
	}
	f.PrivKey.Type = "tendermint/PrivKeyEd25519"
	f.PrivKey.Value = base64.StdEncoding.EncodeToString(k.Priv)
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(home, "config", "node_key.json"), b, 0o600)
}
