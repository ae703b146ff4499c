package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyperledger/fabric-chaincode-go/v2/shim"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func noStart(t *testing.T) func(*shim.ChaincodeServer) error {
	return func(*shim.ChaincodeServer) error { t.Fatal("server must not start"); return nil }
}

func TestRunMissingEnvExits2(t *testing.T) {
	for _, env := range []map[string]string{
		{},
		{"CHAINCODE_ID": "wattproof:abc"},
		{"CHAINCODE_SERVER_ADDRESS": "127.0.0.1:9999"},
	} {
		var stderr bytes.Buffer
		if code := run(envOf(env), &stderr, noStart(t)); code != 2 {
			t.Fatalf("env %v: exit %d", env, code)
		}
		msg := stderr.String()
		if !strings.Contains(msg, "missing required environment variable") {
			t.Fatalf("stderr = %q", msg)
		}
		for _, k := range []string{"CHAINCODE_SERVER_ADDRESS", "CHAINCODE_ID"} {
			if env[k] == "" && !strings.Contains(msg, k) {
				t.Fatalf("stderr %q does not name %s", msg, k)
			}
		}
	}
}

func TestRunTLSConfig(t *testing.T) {
	base := map[string]string{"CHAINCODE_SERVER_ADDRESS": "127.0.0.1:0", "CHAINCODE_ID": "wattproof:abc"}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	var stderr bytes.Buffer
	if code := run(envOf(with(map[string]string{"CHAINCODE_TLS_KEY_FILE": "/k"})), &stderr, noStart(t)); code != 2 {
		t.Fatalf("half TLS config: exit %d", code)
	}
	if code := run(envOf(with(map[string]string{"CHAINCODE_TLS_KEY_FILE": "/nonexistent/k", "CHAINCODE_TLS_CERT_FILE": "/nonexistent/c"})), &stderr, noStart(t)); code != 2 {
		t.Fatalf("unreadable TLS files: exit %d", code)
	}

	dir := t.TempDir()
	for _, n := range []string{"key.pem", "cert.pem", "ca.pem"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var got *shim.ChaincodeServer
	code := run(envOf(with(map[string]string{
		"CHAINCODE_TLS_KEY_FILE": filepath.Join(dir, "key.pem"), "CHAINCODE_TLS_CERT_FILE": filepath.Join(dir, "cert.pem"),
		"CHAINCODE_TLS_CLIENT_CA_FILE": filepath.Join(dir, "ca.pem"),
	})), &stderr, func(s *shim.ChaincodeServer) error { got = s; return nil })
	if code != 0 || got == nil {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	p := got.TLSProps
	if p.Disabled || string(p.Key) != "key.pem" || string(p.Cert) != "cert.pem" || string(p.ClientCACerts) != "ca.pem" {
		t.Fatalf("TLS props = %+v", p)
	}
	if got.CCID != "wattproof:abc" || got.Address != "127.0.0.1:0" || got.CC == nil {
		t.Fatalf("server = %+v", got)
	}

	got = nil
	if code := run(envOf(base), &stderr, func(s *shim.ChaincodeServer) error { got = s; return errors.New("boom") }); code != 1 {
		t.Fatalf("failing server: exit %d", code)
	}
	if !got.TLSProps.Disabled {
		t.Fatal("TLS must be disabled without key/cert files")
	}
}

// TestBinaryExits2WithoutEnv runs the real main (this test binary, re-executed) with no config.
func TestBinaryExits2WithoutEnv(t *testing.T) {
	if os.Getenv("WATTPROOF_CC_RUN_MAIN") == "1" {
		main()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBinaryExits2WithoutEnv$")
	cmd.Env = []string{"WATTPROOF_CC_RUN_MAIN=1"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("want exit status 2, got %v (stderr %q)", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "CHAINCODE_SERVER_ADDRESS") {
		t.Fatalf("stderr = %q", stderr.String())
	}
}
