// Command wattproof-cc is the wattproof Hyperledger Fabric chaincode, run as a service
// (chaincode-as-a-service: the peer connects to this process).
//
// The chaincode owns the ledger side of wattproof: one append-only hash chain of batch headers
// per site. It accepts only canonical (RFC 8785) headers whose prev_hash is the site's current
// head, never overwrites an anchored batch, and checks amendments against the batch they amend.
// The contract itself lives in package anchor.
//
// Environment:
//
//	CHAINCODE_SERVER_ADDRESS   listen address, e.g. 127.0.0.1:9999 (required)
//	CHAINCODE_ID               chaincode package id "label:hash" (required)
//	CHAINCODE_TLS_KEY_FILE     server TLS key (PEM); with CHAINCODE_TLS_CERT_FILE enables TLS
//	CHAINCODE_TLS_CERT_FILE    server TLS certificate (PEM)
//	CHAINCODE_TLS_CLIENT_CA_FILE  CA (PEM) to verify the connecting peer's client certificate
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/hyperledger/fabric-chaincode-go/v2/shim"
	"github.com/wattproof/wattproof/ledger/chaincode/anchor"
)

func main() {
	os.Exit(run(os.Getenv, os.Stderr, func(s *shim.ChaincodeServer) error { return s.Start() }))
}

// config builds the chaincode server from the environment; errors are meant for the operator.
func config(getenv func(string) string) (*shim.ChaincodeServer, error) {
	addr, ccid := getenv("CHAINCODE_SERVER_ADDRESS"), getenv("CHAINCODE_ID")
	var missing []string
	if addr == "" {
		missing = append(missing, "CHAINCODE_SERVER_ADDRESS (listen address, e.g. 127.0.0.1:9999)")
	}
	if ccid == "" {
		missing = append(missing, "CHAINCODE_ID (chaincode package id, label:hash)")
	}
	if len(missing) > 0 {
		msg := "missing required environment variable"
		for i, m := range missing {
			if i == 0 {
				msg += ": " + m
			} else {
				msg += ", " + m
			}
		}
		return nil, fmt.Errorf("%s", msg)
	}

	tls := shim.TLSProperties{Disabled: true}
	keyFile, certFile := getenv("CHAINCODE_TLS_KEY_FILE"), getenv("CHAINCODE_TLS_CERT_FILE")
	caFile := getenv("CHAINCODE_TLS_CLIENT_CA_FILE")
	if (keyFile == "") != (certFile == "") {
		return nil, fmt.Errorf("CHAINCODE_TLS_KEY_FILE and CHAINCODE_TLS_CERT_FILE must be set together")
	}
	if caFile != "" && keyFile == "" {
		return nil, fmt.Errorf("CHAINCODE_TLS_CLIENT_CA_FILE needs CHAINCODE_TLS_KEY_FILE and CHAINCODE_TLS_CERT_FILE")
	}
	if keyFile != "" {
		key, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, fmt.Errorf("reading CHAINCODE_TLS_KEY_FILE: %w", err)
		}
		cert, err := os.ReadFile(certFile)
		if err != nil {
			return nil, fmt.Errorf("reading CHAINCODE_TLS_CERT_FILE: %w", err)
		}
		tls = shim.TLSProperties{Disabled: false, Key: key, Cert: cert}
		if caFile != "" {
			ca, err := os.ReadFile(caFile)
			if err != nil {
				return nil, fmt.Errorf("reading CHAINCODE_TLS_CLIENT_CA_FILE: %w", err)
			}
			tls.ClientCACerts = ca
		}
	}

	cc, err := anchor.NewChaincode()
	if err != nil {
		return nil, fmt.Errorf("building chaincode: %w", err)
	}
	return &shim.ChaincodeServer{CCID: ccid, Address: addr, CC: cc, TLSProps: tls}, nil
}

// run returns the process exit code: 2 for a configuration error, 1 when the server fails.
func run(getenv func(string) string, stderr io.Writer, start func(*shim.ChaincodeServer) error) int {
	srv, err := config(getenv)
	if err != nil {
		fmt.Fprintf(stderr, "wattproof-cc: %v\n", err)
		return 2
	}
	if err := start(srv); err != nil {
		fmt.Fprintf(stderr, "wattproof-cc: chaincode server on %s stopped: %v\n", srv.Address, err)
		return 1
	}
	return 0
}
