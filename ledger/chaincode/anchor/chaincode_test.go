package anchor

import (
	"strings"
	"testing"

	"github.com/hyperledger/fabric-chaincode-go/v2/shim"
)

// TestInvokeThroughContractAPI drives the real contractapi dispatcher: transaction names,
// default contract, argument conversion (the header string arrives byte for byte, ints parse).
func TestInvokeThroughContractAPI(t *testing.T) {
	cc, err := NewChaincode()
	if err != nil {
		t.Fatal(err)
	}
	stub := newFakeStub()
	invoke := func(args ...string) (int32, string, string) {
		stub.args = nil
		for _, a := range args {
			stub.args = append(stub.args, []byte(a))
		}
		res := cc.Invoke(stub)
		if res.Status == shim.OK {
			stub.commit()
		} else {
			stub.rollback()
		}
		return res.Status, string(res.Payload), res.Message
	}

	st, out, msg := invoke("AnchorBatch", goldenHeader)
	if st != shim.OK || !strings.Contains(out, `"header_hash":"`+goldenHash+`"`) {
		t.Fatalf("AnchorBatch: %d %q %q", st, out, msg)
	}
	// namespaced name works too
	st, got, msg := invoke("wattproof:GetBatch", "s01:2026-06-01T00")
	if st != shim.OK || got != out {
		t.Fatalf("GetBatch: %d %q %q", st, got, msg)
	}
	st, got, _ = invoke("GetBatch", "s01:absent")
	if st != shim.OK || got != "" {
		t.Fatalf("GetBatch absent: %d %q", st, got)
	}
	st, got, _ = invoke("GetHead", "s01")
	if st != shim.OK || !strings.Contains(got, `"seq":1`) {
		t.Fatalf("GetHead: %d %q", st, got)
	}
	st, got, _ = invoke("ListBatches", "s01", "1", "10")
	if st != shim.OK || got != "["+out+"]" {
		t.Fatalf("ListBatches: %d %q", st, got)
	}
	st, _, msg = invoke("ListBatches", "s01", "1", "0")
	if st == shim.OK || !strings.HasPrefix(msg, "BAD_REQUEST: ") {
		t.Fatalf("ListBatches limit 0: %d %q", st, msg)
	}
	st, _, msg = invoke("AnchorBatch", goldenHeader)
	if st == shim.OK || !strings.HasPrefix(msg, "ALREADY_ANCHORED: ") {
		t.Fatalf("re-anchor: %d %q", st, msg)
	}
	st, _, msg = invoke("AnchorBatch", " "+goldenHeader)
	if st == shim.OK || !strings.HasPrefix(msg, "INVALID_HEADER: ") {
		t.Fatalf("non-canonical: %d %q", st, msg)
	}
}
