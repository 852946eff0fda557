// Package tm35compat holds tests only: they check ssproto's wire messages
// against tendermint v0.35.9's own generated types (which register with
// github.com/gogo/protobuf, a registry separate from CometBFT's
// github.com/cosmos/gogoproto, so both can be linked into one test binary).
// It lives apart so that no other binary links tendermint v0.35.
package tm35compat
