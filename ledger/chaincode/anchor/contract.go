// Package anchor is the wattproof contract: it guards one hash chain of batch headers per site.
//
// State (all keys are composite keys, so concurrent transactions for different sites touch
// disjoint keys and never MVCC-conflict; there is no global counter):
//
//	("batch", [batch_id])                 -> record JSON
//	("head", [site])                      -> head JSON
//	("site~seq", [site, %016d seq])       -> batch_id
package anchor

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// ContractName is the name under which the contract is registered (and the default contract).
const ContractName = "wattproof"

// EventBatchAnchored is the chaincode event set by a successful AnchorBatch; payload = record JSON.
const EventBatchAnchored = "BatchAnchored"

// MaxListLimit bounds ListBatches' limit.
const MaxListLimit = 1000

const (
	keyBatch   = "batch"
	keyHead    = "head"
	keySiteSeq = "site~seq"
)

// Record is what the ledger keeps for an anchored batch.
type Record struct {
	BatchID    string `json:"batch_id"`
	Site       string `json:"site"`
	Header     string `json:"header"`
	HeaderHash string `json:"header_hash"`
	Seq        int64  `json:"seq"`
	TxID       string `json:"tx_id"`
	TxTimeMs   int64  `json:"tx_time_ms"`
}

// Head is the latest batch of a site.
type Head struct {
	Site       string `json:"site"`
	HeaderHash string `json:"header_hash"`
	BatchID    string `json:"batch_id"`
	Seq        int64  `json:"seq"`
}

// Contract is the wattproof smart contract.
type Contract struct {
	contractapi.Contract
}

// NewContract returns the contract, named ContractName.
func NewContract() *Contract {
	c := &Contract{}
	c.Name = ContractName
	c.Info.Title = "wattproof batch anchoring"
	c.Info.Version = "1.0.0"
	return c
}

// NewChaincode builds the contractapi chaincode with the wattproof contract as default.
func NewChaincode() (*contractapi.ContractChaincode, error) {
	cc, err := contractapi.NewChaincode(NewContract())
	if err != nil {
		return nil, err
	}
	cc.DefaultContract = ContractName
	return cc, nil
}

// AnchorBatch validates a canonical batch header, appends it to its site's chain and returns
// the stored record JSON. It sets the "BatchAnchored" event with the same JSON.
func (c *Contract) AnchorBatch(ctx contractapi.TransactionContextInterface, header string) (string, error) {
	raw := []byte(header)
	h, err := ParseHeader(raw)
	if err != nil {
		return "", err
	}
	stub := ctx.GetStub()

	batchKey, err := stub.CreateCompositeKey(keyBatch, []string{h.BatchID})
	if err != nil {
		return "", internal("batch key", err)
	}
	existing, err := stub.GetState(batchKey)
	if err != nil {
		return "", internal("reading batch "+h.BatchID, err)
	}
	if len(existing) > 0 {
		return "", codeErr("ALREADY_ANCHORED", "batch %s is already on the ledger", h.BatchID)
	}

	head, err := readHead(ctx, h.Site)
	if err != nil {
		return "", err
	}
	if h.PrevHash != head.HeaderHash {
		return "", codeErr("CHAIN_BROKEN", "prev_hash %s is not the head %s of site %s",
			h.PrevHash, head.HeaderHash, h.Site)
	}

	if h.Amends != nil {
		amended, err := readRecord(ctx, *h.Amends)
		if err != nil {
			return "", err
		}
		if amended == nil {
			return "", codeErr("NOT_FOUND", "amended batch %s is not on the ledger", *h.Amends)
		}
		if amended.Site != h.Site {
			return "", invalid("field \"amends\": batch %s belongs to site %s, not %s",
				*h.Amends, amended.Site, h.Site)
		}
		prior, err := ParseHeader([]byte(amended.Header))
		if err != nil {
			return "", internal("stored header of "+*h.Amends, err)
		}
		if family(prior.Kind) != family(h.Kind) {
			return "", invalid("field \"amends\": a %s cannot amend %s, a %s", h.Kind, *h.Amends, prior.Kind)
		}
	}

	ts, err := stub.GetTxTimestamp()
	if err != nil || ts == nil {
		return "", internal("transaction timestamp", err)
	}
	rec := Record{
		BatchID:    h.BatchID,
		Site:       h.Site,
		Header:     header,
		HeaderHash: HashHex(raw),
		Seq:        head.Seq + 1,
		TxID:       stub.GetTxID(),
		TxTimeMs:   ts.GetSeconds()*1000 + int64(ts.GetNanos())/1_000_000,
	}
	recJSON, err := marshal(rec)
	if err != nil {
		return "", internal("encoding record", err)
	}
	newHead, err := marshal(Head{Site: h.Site, HeaderHash: rec.HeaderHash, BatchID: h.BatchID, Seq: rec.Seq})
	if err != nil {
		return "", internal("encoding head", err)
	}
	headKey, err := stub.CreateCompositeKey(keyHead, []string{h.Site})
	if err != nil {
		return "", internal("head key", err)
	}
	seqKey, err := stub.CreateCompositeKey(keySiteSeq, []string{h.Site, seqString(rec.Seq)})
	if err != nil {
		return "", internal("seq key", err)
	}
	if err := stub.PutState(batchKey, recJSON); err != nil {
		return "", internal("writing batch", err)
	}
	if err := stub.PutState(headKey, newHead); err != nil {
		return "", internal("writing head", err)
	}
	if err := stub.PutState(seqKey, []byte(h.BatchID)); err != nil {
		return "", internal("writing seq index", err)
	}
	if err := stub.SetEvent(EventBatchAnchored, recJSON); err != nil {
		return "", internal("setting event", err)
	}
	return string(recJSON), nil
}

// GetBatch returns the record JSON of a batch, or "" when it is not on the ledger.
func (c *Contract) GetBatch(ctx contractapi.TransactionContextInterface, batchID string) (string, error) {
	if !ValidID(batchID) {
		return "", codeErr("BAD_REQUEST", "batch id %q does not match %s", batchID, idPattern)
	}
	key, err := ctx.GetStub().CreateCompositeKey(keyBatch, []string{batchID})
	if err != nil {
		return "", internal("batch key", err)
	}
	b, err := ctx.GetStub().GetState(key)
	if err != nil {
		return "", internal("reading batch "+batchID, err)
	}
	return string(b), nil
}

// GetHead returns the head JSON of a site; an unknown site has the genesis hash, batch_id "" and seq 0.
func (c *Contract) GetHead(ctx contractapi.TransactionContextInterface, site string) (string, error) {
	if !ValidID(site) {
		return "", codeErr("BAD_REQUEST", "site %q does not match %s", site, idPattern)
	}
	head, err := readHead(ctx, site)
	if err != nil {
		return "", err
	}
	b, err := marshal(head)
	if err != nil {
		return "", internal("encoding head", err)
	}
	return string(b), nil
}

// ListBatches returns a JSON array of the site's records with seq >= fromSeq, in seq order,
// at most limit (1..1000) of them.
func (c *Contract) ListBatches(ctx contractapi.TransactionContextInterface, site string, fromSeq int, limit int) (string, error) {
	if !ValidID(site) {
		return "", codeErr("BAD_REQUEST", "site %q does not match %s", site, idPattern)
	}
	if fromSeq < 0 {
		return "", codeErr("BAD_REQUEST", "fromSeq must be >= 0, got %d", fromSeq)
	}
	if limit < 1 || limit > MaxListLimit {
		return "", codeErr("BAD_REQUEST", "limit must be in 1..%d, got %d", MaxListLimit, limit)
	}
	head, err := readHead(ctx, site)
	if err != nil {
		return "", err
	}
	out := make([]json.RawMessage, 0)
	stub := ctx.GetStub()
	for seq := max(int64(fromSeq), 1); seq <= head.Seq && len(out) < limit; seq++ {
		seqKey, err := stub.CreateCompositeKey(keySiteSeq, []string{site, seqString(seq)})
		if err != nil {
			return "", internal("seq key", err)
		}
		id, err := stub.GetState(seqKey)
		if err != nil {
			return "", internal("reading seq index", err)
		}
		if len(id) == 0 {
			return "", internal(fmt.Sprintf("seq %d of site %s", seq, site), fmt.Errorf("index entry missing"))
		}
		rec, err := readRecordRaw(ctx, string(id))
		if err != nil {
			return "", err
		}
		if len(rec) == 0 {
			return "", internal("batch "+string(id), fmt.Errorf("indexed but missing"))
		}
		out = append(out, rec)
	}
	b, err := marshal(out)
	if err != nil {
		return "", internal("encoding list", err)
	}
	return string(b), nil
}

func readHead(ctx contractapi.TransactionContextInterface, site string) (*Head, error) {
	key, err := ctx.GetStub().CreateCompositeKey(keyHead, []string{site})
	if err != nil {
		return nil, internal("head key", err)
	}
	b, err := ctx.GetStub().GetState(key)
	if err != nil {
		return nil, internal("reading head of "+site, err)
	}
	if len(b) == 0 {
		return &Head{Site: site, HeaderHash: GenesisHash, BatchID: "", Seq: 0}, nil
	}
	var h Head
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, internal("decoding head of "+site, err)
	}
	return &h, nil
}

func readRecordRaw(ctx contractapi.TransactionContextInterface, batchID string) (json.RawMessage, error) {
	key, err := ctx.GetStub().CreateCompositeKey(keyBatch, []string{batchID})
	if err != nil {
		return nil, internal("batch key", err)
	}
	b, err := ctx.GetStub().GetState(key)
	if err != nil {
		return nil, internal("reading batch "+batchID, err)
	}
	if len(b) == 0 {
		return nil, nil // absent (Fabric returns nil or empty for a missing key)
	}
	return b, nil
}

func readRecord(ctx contractapi.TransactionContextInterface, batchID string) (*Record, error) {
	b, err := readRecordRaw(ctx, batchID)
	if err != nil || b == nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, internal("decoding batch "+batchID, err)
	}
	return &r, nil
}

func seqString(seq int64) string { return fmt.Sprintf("%016d", seq) }

func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func internal(what string, err error) error {
	return codeErr("INTERNAL", "%s: %v", what, err)
}

// family groups header kinds: readings batches (seal, amendment), claim verdict sets
// (verdicts, restatement) and report manifests (report). An amendment amends a readings batch; a restatement supersedes a verdict set.
func family(kind string) string {
	switch kind {
	case "verdicts", "restatement":
		return "verdicts"
	case "report":
		return "reports"
	}
	return "readings"
}
