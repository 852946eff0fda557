package sdknet

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// GRPCUnary makes a unary gRPC call over HTTP/2 without TLS (prior
// knowledge, as grpc-go's insecure credentials do) with the standard
// library only, so that the -race e2e test binary compiles neither grpc-go
// nor a protobuf runtime: req and the result are the encoded protobuf
// messages; md is sent as request metadata (headers). A grpc-status other
// than 0 is an error with the server's grpc-message.
func GRPCUnary(ctx context.Context, addr, method string, req []byte, md map[string]string) ([]byte, error) {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protocols}
	defer tr.CloseIdleConnections()

	frame := make([]byte, 5, 5+len(req)) // uncompressed flag, big-endian length, message
	binary.BigEndian.PutUint32(frame[1:], uint32(len(req)))
	frame = append(frame, req...)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+method, bytes.NewReader(frame))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/grpc")
	hreq.Header.Set("TE", "trailers")
	for k, v := range md {
		hreq.Header.Set(k, v)
	}
	resp, err := (&http.Client{Transport: tr}).Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("grpc %s: %w", method, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body) // the trailers are read with the body
	if err != nil {
		return nil, fmt.Errorf("grpc %s: %w", method, err)
	}
	status, msg := resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")
	if status == "" { // a trailers-only response carries the status in its headers
		status, msg = resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message")
	}
	switch {
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("grpc %s: HTTP status %s", method, resp.Status)
	case status != "0":
		return nil, fmt.Errorf("grpc %s: status %q: %s", method, status, msg)
	case len(body) < 5 || body[0] != 0:
		return nil, fmt.Errorf("grpc %s: malformed response frame (%d bytes)", method, len(body))
	}
	n := binary.BigEndian.Uint32(body[1:5])
	if uint64(n) != uint64(len(body)-5) {
		return nil, fmt.Errorf("grpc %s: frame says %d bytes, got %d", method, n, len(body)-5)
	}
	return body[5:], nil
}

// appendBytesField appends protobuf field num (wire type 2) with v.
func appendBytesField(b []byte, num uint64, v []byte) []byte {
	b = binary.AppendUvarint(b, num<<3|2)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

var errProto = errors.New("malformed protobuf")

// eachField calls f with every length-delimited field of the protobuf
// message b; varint and fixed-size fields are skipped.
func eachField(b []byte, f func(num uint64, v []byte) error) error {
	for len(b) > 0 {
		tag, n := binary.Uvarint(b)
		if n <= 0 {
			return errProto
		}
		b = b[n:]
		var v []byte
		switch tag & 7 {
		case 0: // varint
			if _, n = binary.Uvarint(b); n <= 0 {
				return errProto
			}
		case 1: // fixed64
			n = 8
		case 5: // fixed32
			n = 4
		case 2:
			l, m := binary.Uvarint(b)
			if m <= 0 || l > uint64(len(b)-m) {
				return errProto
			}
			v, n = b[m:m+int(l)], m+int(l)
		default:
			return fmt.Errorf("%w: wire type %d", errProto, tag&7)
		}
		if n > len(b) {
			return errProto
		}
		b = b[n:]
		if tag&7 == 2 {
			if err := f(tag>>3, v); err != nil {
				return err
			}
		}
	}
	return nil
}
